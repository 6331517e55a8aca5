"""`detzoo inspect`: counts on real data against counts taken straight from the annotation files, every injected
problem named in one run, anchor coverage on boxes built to fit (or miss) the anchors, and a valid PNG."""

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.inspect import inspect_dataset
from detzoo.models import create_model

PNG_WIDTH = 12 * 72  # the inspector's figure: 12 inches at 72 dpi


def _run(capsys, tmp_path, *args) -> tuple[dict, str]:
    out = tmp_path / "inspect"
    assert main(["inspect", *args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with Image.open(out / "inspect.png") as image:
        image.verify()
    with Image.open(out / "inspect.png") as image:
        assert image.format == "PNG" and image.width == PNG_WIDTH and image.height > 600
    return json.loads((out / "inspect.json").read_text()), printed


def _bucket(area: float) -> str:
    return "small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"


def test_counts_on_coco128(coco128_json, capsys, tmp_path):
    report, printed = _run(capsys, tmp_path, "--data", str(coco128_json), "--samples", "4")
    truth = json.loads(coco128_json.read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    images = {i["id"]: i for i in truth["images"]}
    anns = truth["annotations"]
    stats = report["statistics"]
    assert stats["images"] == len(images) == 128
    assert stats["objects"] == len(anns)
    assert stats["crowd"] == sum(a["iscrowd"] for a in anns) == 10
    assert stats["images_without_objects"] == len(set(images) - {a["image_id"] for a in anns})
    per_class = {row["class"]: row for row in stats["per_class"]}
    objects = Counter(names[a["category_id"]] for a in anns)
    holding = Counter(names[category] for _, category in {(a["image_id"], a["category_id"]) for a in anns})
    assert {n: r["objects"] for n, r in per_class.items() if r["objects"]} == objects
    assert {n: r["images"] for n, r in per_class.items() if r["images"]} == holding
    per_image = Counter(a["image_id"] for a in anns)
    counts = [per_image.get(i, 0) for i in images]
    assert stats["objects_per_image"]["max"] == max(counts)
    assert stats["objects_per_image"]["median"] == float(np.median(counts))
    # box sizes: the readers clip boxes to the image (a box may stick out by up to 2 px), so clip here too
    buckets = Counter()
    for a in anns:
        if a["iscrowd"]:
            continue
        x, y, w, h = a["bbox"]
        image = images[a["image_id"]]
        w = min(x + w, image["width"]) - max(x, 0)
        h = min(y + h, image["height"]) - max(y, 0)
        buckets[_bucket(w * h)] += 1
    assert stats["boxes"]["size_buckets"] == {k: buckets[k] for k in ("small", "medium", "large")}
    sizes = Counter((i["width"], i["height"]) for i in images.values())
    assert stats["image_sizes"]["distinct"] == len(sizes)
    assert stats["image_sizes"]["most_common"][0] == {"width": 640, "height": 480, "images": sizes[(640, 480)]}
    assert report["problems"] == [] and report["duplicates"] == []
    assert "person" in printed and "problems: 0" in printed


def test_counts_on_microcontroller(micro, capsys, tmp_path):
    report, _ = _run(capsys, tmp_path, "--data", str(micro / "train"), "--samples", "4")
    roots = [ET.parse(p).getroot() for p in sorted((micro / "train").glob("*.xml"))]
    objects = [o for r in roots for o in r.iter("object")]
    stats = report["statistics"]
    assert stats["images"] == len(roots) == 142
    assert stats["objects"] == len(objects)
    assert stats["difficult"] == sum(o.findtext("difficult", "0").strip() == "1" for o in objects)
    assert {r["class"]: r["objects"] for r in stats["per_class"]} == Counter(o.findtext("name").strip()
                                                                             for o in objects)
    assert stats["objects_per_image"]["max"] == max(len(r.findall("object")) for r in roots)
    sizes = Counter((int(r.findtext("size/width")), int(r.findtext("size/height"))) for r in roots)
    assert {(s["width"], s["height"]): s["images"] for s in stats["image_sizes"]["most_common"]} == dict(sizes)


def _jpeg(path, seed: int, size=(64, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path.read_bytes()


def test_every_injected_problem_is_named_in_one_run(tmp_path, capsys):
    """Seven bad samples (more than the five examples the skip-bad warning used to keep) and one duplicate."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = _jpeg(folder / "good.jpg", 0)
    for i in range(1, 6):
        _jpeg(folder / f"img{i}.jpg", i)
    (folder / "truncated.jpg").write_bytes(_jpeg(folder / "truncated.jpg", 9)[:400])
    (folder / "copy.jpg").write_bytes(good)
    files = ["good.jpg", "truncated.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "img4.jpg", "img5.jpg", "copy.jpg",
             "missing.jpg"]
    images = [{"id": i + 1, "file_name": f, "width": 64, "height": 48} for i, f in enumerate(files)]
    images[files.index("img5.jpg")].update(width=100, height=100)  # the file is 64 x 48
    box = [4, 4, 20, 20]
    anns = [{"id": 10 + i, "image_id": i + 1, "category_id": 1, "bbox": box, "iscrowd": 0} for i in range(len(files))]
    anns[2]["bbox"] = [500, 10, 20, 20]  # img1: outside the 64 x 48 image
    anns[3]["category_id"] = 7  # img2: unknown class
    anns[4]["bbox"] = [10, 10, 0, 15]  # img3: zero width
    anns[5]["bbox"] = [1, 2, 3]  # img4: not [x, y, w, h]
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    json_path = tmp_path / "annotations" / "instances_bad.json"
    json_path.parent.mkdir()
    json_path.write_text(json.dumps(coco))

    report, printed = _run(capsys, tmp_path, "--data", str(json_path), "--images", str(folder))
    problems = report["problems"]
    expected = {  # file (or annotation id) named, and what is wrong
        "img1.jpg": "lies outside the 64x48 image",
        "img2.jpg": "annotation id 13: unknown category_id 7",
        "img3.jpg": "annotation id 14: box [10, 10, 10, 25] has no area",
        "img4.jpg": "annotation id 15: 'bbox' must be [x, y, w, h]",
        "missing.jpg": "image file not found",
        "truncated.jpg": "cannot decode image (corrupt or truncated?)",
        "img5.jpg": "image is 64x48 but",
    }
    for name, what in expected.items():
        assert [m for m in problems if name in m and what in m], f"{name}: '{what}' not in {problems}"
    assert len(problems) == len(expected)
    assert len(report["duplicates"]) == 1 and len(report["duplicates"][0]) == 2
    assert "good.jpg" in report["duplicates"][0][0] and "copy.jpg" in report["duplicates"][0][1]
    assert f"problems: {len(expected)}" in printed and all(m in printed for m in problems)
    # the counts are those of the samples the readers accept: a bad object costs only itself (issue 9), so every
    # image but the missing one is counted (img1-img4 without their bad box)
    assert report["statistics"]["images"] == 8


@pytest.mark.parametrize("name", ["ssd300_mobilenetv2", "faster_rcnn_r50_fpn"])
def test_anchor_coverage_after_the_models_resize(tmp_path, name):
    """Boxes made from the model's own anchors, mapped back through its resize, are covered (IoU 1); a 2 x 2 px
    box is not (its best IoU is at most its area over the smallest anchor's, far below 0.5)."""
    model = create_model(name, num_classes=1).eval()
    width, height = 600, 400  # SSD stretches to 300 x 300; Faster R-CNN scales by min(768/400, 1280/600)
    out_h, out_w = model.preprocess.output_size(height, width)
    step = model.preprocess.size_divisible  # 32 for Faster R-CNN's padded batches, 1 for SSD
    padded = (math.ceil(out_h / step) * step, math.ceil(out_w / step) * step)
    anchors = model.anchor_boxes(padded)
    inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= out_w) & (anchors[:, 3] <= out_h))
    chosen = anchors[inside][torch.linspace(0, int(inside.sum()) - 1, 5).long()]
    boxes = (chosen * torch.tensor([width / out_w, height / out_h] * 2)).tolist()
    boxes.append([300, 200, 302, 202])
    Image.new("RGB", (width, height)).save(tmp_path / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [x1, y1, x2 - x1, y2 - y1]} for i, (x1, y1, x2, y2) in enumerate(boxes)],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    report = inspect_dataset(DatasetSpec(path=str(tmp_path / "coco.json"), images=str(tmp_path)),
                             model_name=name, out=tmp_path / "out", samples=1)
    coverage = report["anchor_coverage"]
    assert coverage["anchors_per_image"]["min"] == len(anchors)
    assert coverage["buckets"]["all"] == {"boxes": 6, "covered": 5, "fraction": round(5 / 6, 4),
                                          "median_best_iou": pytest.approx(1.0, abs=1e-4)}
    assert coverage["buckets"]["small"]["boxes"] >= 1 and coverage["buckets"]["small"]["covered"] < \
        coverage["buckets"]["small"]["boxes"]
