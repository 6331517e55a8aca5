"""What is in a dataset, from its records alone: counts per class and per image, crowd and difficult objects,
COCO's box-size buckets, aspect ratios and image sizes. Plain numpy over the arrays the readers built.

Sizes use the box area in image pixels (COCO's own ``area`` is the segmentation mask's, which other formats do
not have); the buckets are COCO's: small < 32^2 <= medium < 96^2 <= large. Crowd boxes (ignore regions) are
counted per class but left out of the size and aspect distributions.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..data.records import DetectionData

SIZE_BUCKETS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, float("inf")))
# width / height, binned on a log scale: [..1/4), [1/4, 1/2), [1/2, 1), [1, 2), [2, 4), [4, ..)
ASPECT_EDGES = (0.25, 0.5, 1.0, 2.0, 4.0)
ASPECT_LABELS = ("< 1/4", "1/4-1/2", "1/2-1", "1-2", "2-4", ">= 4")
PERCENTILES = (5, 25, 50, 75, 95)


def size_bucket(areas: np.ndarray) -> np.ndarray:
    """COCO size bucket index (0 small, 1 medium, 2 large) of each box area."""
    return np.digitize(areas, [hi for _, _, hi in SIZE_BUCKETS[:-1]])


def box_arrays(data: DetectionData, include_crowd: bool = False) -> dict[str, np.ndarray]:
    """Every object's width, height, area and label, concatenated over the images."""
    keep = [r.iscrowd if include_crowd else ~r.iscrowd for r in data.records]
    boxes = np.concatenate([r.boxes[k] for r, k in zip(data.records, keep)] or [np.zeros((0, 4), np.float32)])
    labels = np.concatenate([r.labels[k] for r, k in zip(data.records, keep)] or [np.zeros(0, np.int64)])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {"width": width.astype(np.float64), "height": height.astype(np.float64),
            "area": (width * height).astype(np.float64), "labels": labels}


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    return {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def class_counts(data: DetectionData) -> list[dict]:
    """Per class: objects, images that hold it, and of its objects how many are crowd and difficult."""
    rows = [{"class": name, "objects": 0, "images": 0, "crowd": 0, "difficult": 0} for name in data.class_names]
    for record in data.records:
        for label in np.unique(record.labels):
            rows[label]["images"] += 1
        for label, crowd, difficult in zip(record.labels.tolist(), record.iscrowd.tolist(), record.difficult.tolist()):
            rows[label]["objects"] += 1
            rows[label]["crowd"] += int(crowd)
            rows[label]["difficult"] += int(difficult)
    return rows


def objects_per_image(data: DetectionData) -> dict:
    counts = np.array([r.num_objects for r in data.records], dtype=np.int64)
    if not len(counts):
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0, "histogram": {}}
    histogram = Counter(min(int(c), 20) for c in counts)  # 20 stands for "20 or more"
    return {"min": int(counts.min()), "median": float(np.median(counts)), "mean": round(float(counts.mean()), 3),
            "max": int(counts.max()),
            "histogram": {(f"{k}" if k < 20 else "20+"): histogram[k] for k in sorted(histogram)}}


def box_statistics(data: DetectionData) -> dict:
    """COCO size buckets, side length sqrt(area) and aspect ratio (width / height) distributions."""
    arrays = box_arrays(data)
    buckets = np.bincount(size_bucket(arrays["area"]), minlength=len(SIZE_BUCKETS))
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = arrays["width"] / arrays["height"]
    aspect_bins = np.bincount(np.digitize(aspect, ASPECT_EDGES), minlength=len(ASPECT_LABELS))
    return {
        "size_buckets": {name: int(n) for (name, _, _), n in zip(SIZE_BUCKETS, buckets)},
        "side_px": _percentiles(np.sqrt(arrays["area"])),
        "aspect_ratio": {"bins": dict(zip(ASPECT_LABELS, map(int, aspect_bins))), **_percentiles(aspect)},
    }


def image_sizes(data: DetectionData, top: int = 10) -> dict:
    sizes = Counter((r.width, r.height) for r in data.records)
    if not sizes:
        return {"distinct": 0, "most_common": []}
    widths = [w for w, _ in sizes.elements()]
    heights = [h for _, h in sizes.elements()]
    return {"distinct": len(sizes),
            "most_common": [{"width": w, "height": h, "images": n} for (w, h), n in sizes.most_common(top)],
            "width": {"min": min(widths), "max": max(widths)}, "height": {"min": min(heights), "max": max(heights)}}


def dataset_statistics(data: DetectionData) -> dict:
    records = data.records
    return {
        "images": len(records),
        "objects": int(sum(r.num_objects for r in records)),
        "images_without_objects": sum(r.num_objects == 0 for r in records),
        "crowd": int(sum(r.iscrowd.sum() for r in records)),
        "difficult": int(sum(r.difficult.sum() for r in records)),
        "per_class": class_counts(data),
        "objects_per_image": objects_per_image(data),
        "boxes": box_statistics(data),
        "image_sizes": image_sizes(data),
    }
