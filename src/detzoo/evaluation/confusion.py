"""A detection confusion matrix: which class each ground-truth object was detected as, with a background row
(detections that match no object) and a background column (objects no detection matched).

AP has no such matrix, so it is computed here: per image, detections at or above ``score`` are matched to
ground truth of any class, pairs in descending IoU order, each box in at most one pair, IoU >= ``iou``.
Ignored ground truth (COCO crowd, VOC difficult) is left out of the matrix, and so is an unmatched detection
that overlaps an ignored box by IoU >= ``iou``, as in the AP computations.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from ..common.structures import Detections
from ..data.records import DetectionData


def confusion_matrix(detections: list[Detections], data: DetectionData, score: float = 0.3,
                     iou: float = 0.5) -> np.ndarray:
    """[K+1, K+1] counts: row = true class (K: background), column = detected class (K: missed)."""
    classes = len(data.class_names)
    matrix = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    for record, det in zip(data.records, detections):
        det = det.filter(score)
        ignore = record.difficult | record.iscrowd
        overlaps = np.zeros((record.num_objects, len(det)))
        if record.num_objects and len(det):
            overlaps = box_iou(torch.from_numpy(record.boxes).float(), det.boxes.float()).numpy()
        det_labels = det.labels.numpy()
        real = np.flatnonzero(~ignore)
        gt_taken = np.zeros(record.num_objects, dtype=bool)
        det_taken = np.zeros(len(det), dtype=bool)
        candidates = overlaps[real]
        for g, d in zip(*np.unravel_index(np.argsort(-candidates, axis=None, kind="stable"), candidates.shape)):
            if candidates[g, d] < iou:
                break
            g = real[g]
            if not gt_taken[g] and not det_taken[d]:
                gt_taken[g] = det_taken[d] = True
                matrix[record.labels[g], det_labels[d]] += 1
        for g in real[~gt_taken[real]]:
            matrix[record.labels[g], classes] += 1
        on_ignored = (overlaps[ignore] >= iou).any(axis=0) if ignore.any() else np.zeros(len(det), dtype=bool)
        for d in np.flatnonzero(~det_taken & ~on_ignored):
            matrix[classes, det_labels[d]] += 1
    return matrix
