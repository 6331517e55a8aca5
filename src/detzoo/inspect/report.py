"""The inspector's report as text tables (what ``detzoo inspect`` prints; the JSON holds the same figures)."""

from __future__ import annotations

from .stats import SIZE_BUCKETS


def table(header: list[str], rows: list[list], right: int = 1) -> str:
    """Columns padded to their widest cell; the columns from ``right`` on are right-aligned (numbers)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in cells[1:]])


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def format_report(report: dict) -> str:
    stats = report["statistics"]
    per_image = stats["objects_per_image"]
    out = [f"dataset: {report['source']} ({report['format']}), {stats['images']} images, "
           f"{stats['objects']} objects, {len(stats['per_class'])} classes",
           f"images without objects {stats['images_without_objects']}, crowd objects {stats['crowd']}, "
           f"difficult objects {stats['difficult']}, bad samples {len(report['problems'])}",
           f"objects per image: min {per_image['min']}, median {per_image['median']:g}, "
           f"mean {per_image['mean']:g}, max {per_image['max']}", ""]
    columns = ["class", "objects", "images", "crowd", "difficult"]
    out.append(table(columns, [[row[c] for c in columns] for row in stats["per_class"]]))
    boxes = stats["boxes"]
    total = sum(boxes["size_buckets"].values())
    bounds = {"small": "< 32^2 px", "medium": "32^2 - 96^2 px", "large": ">= 96^2 px"}
    counts = boxes["size_buckets"]
    out += ["", table(["box size (COCO, non-crowd)", "boxes", "share"],
                      [[f"{name} ({bounds[name]})", counts[name], _share(counts[name], total)]
                       for name, _, _ in SIZE_BUCKETS])]
    if boxes["side_px"]:
        out.append("box side sqrt(area) px, percentiles 5/25/50/75/95: "
                   + " / ".join(f"{v:g}" for v in boxes["side_px"].values()))
    aspect = boxes["aspect_ratio"]
    out += ["", table(["aspect ratio (width / height)", "boxes", "share"],
                      [[label, n, _share(n, total)] for label, n in aspect["bins"].items()])]
    sizes = stats["image_sizes"]
    if sizes["distinct"]:
        common = ", ".join(f"{s['width']}x{s['height']} ({s['images']})" for s in sizes["most_common"])
        width, height = sizes["width"], sizes["height"]
        out += ["", f"image sizes: {sizes['distinct']} distinct; widths {width['min']}-{width['max']}, "
                    f"heights {height['min']}-{height['max']}; most common: {common}"]
    if "anchor_coverage" in report:
        out += ["", format_coverage(report["anchor_coverage"])]
    out += ["", f"duplicate images (identical files): {len(report['duplicates'])} group(s)"]
    out += [f"  {' = '.join(group)}" for group in report["duplicates"]]
    out += [f"problems: {len(report['problems'])}"] + [f"  {message}" for message in report["problems"]]
    out += [f"repaired (truncated JPEGs, decoded from the data they hold): {len(report['repaired'])}"]
    out += [f"  {message}" for message in report["repaired"]]
    return "\n".join(out)


def format_coverage(coverage: dict) -> str:
    anchors = coverage["anchors_per_image"]
    count = f"{anchors['min']}" if anchors["min"] == anchors["max"] else f"{anchors['min']}-{anchors['max']}"
    size = "x".join(map(str, coverage["input_size"]))
    title = (f"anchor coverage of {coverage['model']} ({coverage['resize']} {size}, {count} anchors per image): "
             f"boxes whose best anchor has IoU >= {coverage['iou']:g}")
    rows = [[name, r["boxes"], r["covered"], "-" if r["fraction"] is None else f"{100 * r['fraction']:.1f}%",
             "-" if r["median_best_iou"] is None else f"{r['median_best_iou']:.3f}"]
            for name, r in coverage["buckets"].items()]
    return title + "\n" + table(["size (COCO)", "boxes", "covered", "share", "median best IoU"], rows)
