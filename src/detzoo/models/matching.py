"""SSD anchor matching: each anchor takes its highest-IoU ground truth when IoU > threshold, and each
ground truth is also forced onto its best anchor. Crowd boxes are ignore regions: an anchor that is not
positive but overlaps a crowd box by more than the threshold is neither positive nor negative."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

BACKGROUND = -1
IGNORE = -2


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5,
                  crowd: torch.Tensor | None = None) -> torch.Tensor:
    """-> [A] index of the matched ground truth, BACKGROUND (-1) or IGNORE (-2)."""
    num_anchors = anchors.shape[0]
    matches = torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=anchors.device)
    if crowd is None:
        crowd = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=anchors.device)
    real = (~crowd).nonzero().squeeze(1)
    if real.numel():
        iou = box_iou(gt_boxes[real], anchors)  # [G, A]
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou > iou_threshold, real[best_gt], matches)
        # force every ground truth onto its best anchor (later ground truths win a shared anchor)
        best_anchor = iou.argmax(dim=1)
        matches[best_anchor] = real
    if crowd.any():
        crowd_iou = box_iou(gt_boxes[crowd], anchors).max(dim=0).values
        matches[(matches == BACKGROUND) & (crowd_iou > iou_threshold)] = IGNORE
    return matches
