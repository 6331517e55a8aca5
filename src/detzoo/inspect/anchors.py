"""Anchor coverage: how well a model's anchors fit a dataset's boxes after the model's own resize.

Each (non-crowd) box is resized as the model's ``Preprocess`` resizes its image (stretched to the SSD input,
or fitted into Faster R-CNN's box and padded to a multiple of 32) and compared with the anchors the model
matches boxes to (``Detector.anchor_boxes``: the SSD anchor buffer, or the RPN's ``AnchorGenerator`` on that
padded size). A box is covered when its best anchor has IoU >= 0.5, the SSD matchers' positive threshold;
a box no anchor covers is only trained through the one anchor forced onto it. Faster R-CNN's RPN calls
anchors positive from IoU 0.7 and its second stage refines proposals, so there the figure is a lower bar.
The buckets are COCO's sizes of the box in the original image, as in the evaluation's AP_small/medium/large.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from ..data.loader import padded_side
from ..data.records import DetectionData
from ..models.detector import Detector
from .stats import SIZE_BUCKETS, size_bucket

COVERED_IOU = 0.5
CHUNK = 64  # boxes per IoU matrix (Faster R-CNN has ~250k anchors per image)


def best_anchor_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """[M] the highest IoU of each box with any anchor."""
    if not len(boxes):
        return torch.zeros(0)
    return torch.cat([box_iou(chunk, anchors).max(dim=1).values for chunk in boxes.split(CHUNK)])


def anchor_coverage(data: DetectionData, model: Detector, model_name: str) -> dict:
    pre = model.preprocess
    anchors_by_size: dict[tuple[int, int], torch.Tensor] = {}
    best, areas = [], []
    for record in data.records:
        keep = ~record.iscrowd
        if not keep.any():
            continue
        height, width = pre.output_size(record.height, record.width)
        padded = (padded_side(height, pre.size_divisible), padded_side(width, pre.size_divisible))
        if padded not in anchors_by_size:
            anchors_by_size[padded] = model.anchor_boxes(padded).float()
        scale = torch.tensor([width / record.width, height / record.height] * 2)
        boxes = torch.from_numpy(record.boxes[keep]).float() * scale
        best.append(best_anchor_iou(boxes, anchors_by_size[padded]))
        box = record.boxes[keep]
        areas.append(((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).astype(np.float64))
    best_iou = torch.cat(best).numpy() if best else np.zeros(0)
    buckets = size_bucket(np.concatenate(areas)) if areas else np.zeros(0, np.int64)
    rows = {}
    for index, (name, _, _) in enumerate(SIZE_BUCKETS):
        rows[name] = _row(best_iou[buckets == index])
    rows["all"] = _row(best_iou)
    counts = [len(a) for a in anchors_by_size.values()] or [0]
    return {"model": model_name, "iou": COVERED_IOU, "resize": pre.resize, "input_size": list(pre.size),
            "anchors_per_image": {"min": min(counts), "max": max(counts)}, "buckets": rows}


def _row(best_iou: np.ndarray) -> dict:
    if not len(best_iou):
        return {"boxes": 0, "covered": 0, "fraction": None, "median_best_iou": None}
    covered = int((best_iou >= COVERED_IOU).sum())
    return {"boxes": int(len(best_iou)), "covered": covered, "fraction": round(covered / len(best_iou), 4),
            "median_best_iou": round(float(np.median(best_iou)), 4)}
