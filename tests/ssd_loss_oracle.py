"""The SSD matching and losses as detzoo computed them before they were batched: image by image, with
``nonzero`` and boolean-mask indexing (c26eec0's ``models/matching.py`` and ``models/losses.py``). Kept as the
reference the batched code must reproduce (tests/test_batched_loss.py): the same labels and box targets
exactly, the same losses up to float summation order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_area, box_iou, sigmoid_focal_loss

from detzoo.models.box_coder import BoxCoder
from detzoo.models.matching import BACKGROUND, IGNORE, ignore_regions


def intersection_over_anchor(regions: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    top_left = torch.max(regions[:, None, :2], anchors[None, :, :2])
    bottom_right = torch.min(regions[:, None, 2:], anchors[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter / box_area(anchors).clamp(min=torch.finfo(anchors.dtype).tiny)[None]


def match_image(anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5,
                ignore: torch.Tensor | None = None) -> torch.Tensor:
    """[A]: matched ground-truth index, BACKGROUND or IGNORE, for one image."""
    matches = torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.long)
    if ignore is None:
        ignore = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    real = (~ignore).nonzero().squeeze(1)
    if real.numel():
        iou = box_iou(gt_boxes[real], anchors)
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou > iou_threshold, real[best_gt], matches)
        for gt, anchor in enumerate(iou.argmax(dim=1).tolist()):  # later ground truths win a shared anchor
            matches[anchor] = real[gt]
    if ignore.any():
        inside = intersection_over_anchor(gt_boxes[ignore], anchors).max(dim=0).values
        matches[(matches == BACKGROUND) & (inside > iou_threshold)] = IGNORE
    return matches


def match(anchors: torch.Tensor, targets: list[dict], iou_threshold: float = 0.5,
          box_coder: BoxCoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """labels [N, A], box targets [N, A, 4], image by image."""
    box_coder = box_coder or BoxCoder()
    labels, box_targets = [], []
    for target in targets:
        boxes = target["boxes"]
        matches = match_image(anchors, boxes, iou_threshold, ignore_regions(target))
        if boxes.shape[0] == 0:
            labels.append(matches)
            box_targets.append(torch.zeros_like(anchors))
            continue
        positive = matches >= 0
        index = matches.clamp(min=0)
        labels.append(torch.where(positive, target["labels"][index], matches))
        codes = box_coder.encode(boxes[index], anchors)
        box_targets.append(torch.where(positive[:, None], codes, torch.zeros_like(codes)))
    return torch.stack(labels), torch.stack(box_targets)


def losses(kind: str, box_regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
           targets: list[dict], alpha: float = 0.75, gamma: float = 2.0,
           neg_pos_ratio: float = 3.0) -> dict[str, torch.Tensor]:
    labels, box_targets = match(anchors, targets)
    positive = labels >= 0
    num_positive = positive.sum().clamp(min=1).float()
    loss_box = F.smooth_l1_loss(box_regression[positive], box_targets[positive], beta=1.0, reduction="sum")
    if kind == "focal":
        valid = labels != IGNORE
        one_hot = torch.zeros_like(class_logits)
        one_hot[positive, labels[positive]] = 1.0
        loss_cls = sigmoid_focal_loss(class_logits[valid], one_hot[valid], alpha=alpha, gamma=gamma,
                                      reduction="sum")
    else:
        ce = F.cross_entropy(class_logits.flatten(0, 1), (labels + 1).clamp(min=0).flatten(),
                             reduction="none").view_as(labels)
        negative = labels == BACKGROUND
        hardness = torch.where(negative, ce.detach(), torch.full_like(ce, -1.0))
        order = hardness.argsort(dim=1, descending=True).argsort(dim=1)
        num_negative = (positive.sum(dim=1, keepdim=True) * neg_pos_ratio).long()
        loss_cls = ce[positive | (negative & (order < num_negative))].sum()
    return {"loss_box": loss_box / num_positive, "loss_cls": loss_cls / num_positive}
