"""SSD anchor matching: each anchor takes its highest-IoU ground truth when IoU > threshold, and each
ground truth is also forced onto its best anchor.

Crowd boxes and VOC ``difficult`` objects are ignore regions: an anchor that is not positive but lies more than
the threshold inside one - intersection over the *anchor's* area (IoF), the rule of COCO's evaluation for crowd
regions and of MMDetection's ``ignore_iof_thr`` - is neither positive nor negative. IoU would not do: a crowd
box is large, so an anchor wholly inside it has a small IoU with it and would be trained as background on the
very objects the crowd box covers. A positive match to a real object wins over an ignore region.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_area, box_iou

BACKGROUND = -1
IGNORE = -2


def ignore_regions(target: dict) -> torch.Tensor:
    """bool [G] on the boxes' device: the target's boxes that are ignore regions, not objects to find - COCO
    crowd boxes and VOC ``difficult`` objects (pytorch-ssd drops the latter, MMDetection ignores them, VOC
    evaluation never counts them)."""
    boxes = target["boxes"]
    ignore = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for key in ("iscrowd", "difficult"):
        if target.get(key) is not None:
            ignore |= target[key].to(boxes.device).bool()
    return ignore


def intersection_over_anchor(regions: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """[R, 4] regions, [A, 4] anchors (xyxy) -> [R, A] area of the intersection / area of the anchor."""
    top_left = torch.max(regions[:, None, :2], anchors[None, :, :2])
    bottom_right = torch.min(regions[:, None, 2:], anchors[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter / box_area(anchors).clamp(min=torch.finfo(anchors.dtype).tiny)[None]


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5,
                  ignore: torch.Tensor | None = None) -> torch.Tensor:
    """-> [A] index of the matched ground truth, BACKGROUND (-1) or IGNORE (-2). ``ignore`` [G] marks the
    ground truths that are ignore regions (crowd or difficult)."""
    num_anchors = anchors.shape[0]
    matches = torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=anchors.device)
    if ignore is None:
        ignore = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=anchors.device)
    real = (~ignore).nonzero().squeeze(1)
    if real.numel():
        iou = box_iou(gt_boxes[real], anchors)  # [G, A]
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou > iou_threshold, real[best_gt], matches)
        # force every ground truth onto its best anchor (later ground truths win a shared anchor)
        best_anchor = iou.argmax(dim=1)
        matches[best_anchor] = real
    if ignore.any():
        inside = intersection_over_anchor(gt_boxes[ignore], anchors).max(dim=0).values
        matches[(matches == BACKGROUND) & (inside > iou_threshold)] = IGNORE
    return matches
