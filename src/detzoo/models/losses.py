"""SSD losses: sigmoid focal loss over the K foreground logits (torchvision ``sigmoid_focal_loss``) or
softmax cross-entropy over K+1 logits with hard negative mining, plus smooth L1 on positive anchors; both
summed over the batch and divided by the number of positive anchors (at least 1). Crowd boxes and VOC
``difficult`` objects are ignore regions (``models/matching.py``): their anchors count neither way.

Under DDP (in training) the divisor is the positive count of the whole global batch divided by the number
of processes (``engine.distributed.global_normalizer``), so DDP's gradient average equals the gradient of
one process holding the global batch, as the recipe ("divide by the positives in the batch") means."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from ..common.distributed import global_normalizer
from .box_coder import BoxCoder
from .matching import BACKGROUND, IGNORE, ignore_regions, match_anchors


class SSDLoss(nn.Module):
    def __init__(self, kind: str = "focal", alpha: float = 0.75, gamma: float = 2.0, neg_pos_ratio: float = 3.0,
                 iou_threshold: float = 0.5, box_coder: BoxCoder | None = None):
        super().__init__()
        if kind not in ("focal", "softmax"):
            raise ValueError(f"unknown SSD loss '{kind}' (focal or softmax)")
        self.kind = kind
        self.alpha = alpha
        self.gamma = gamma
        self.neg_pos_ratio = neg_pos_ratio
        self.iou_threshold = iou_threshold
        self.box_coder = box_coder or BoxCoder()

    def match(self, anchors: torch.Tensor, targets: list[dict]) -> tuple[torch.Tensor, torch.Tensor,
                                                                          torch.Tensor]:
        """-> labels [N, A] (class index, BACKGROUND or IGNORE), box targets [N, A, 4] (encoded)."""
        labels, box_targets = [], []
        for target in targets:
            boxes = target["boxes"].to(anchors.device)
            matches = match_anchors(anchors, boxes, self.iou_threshold, ignore_regions(target).to(anchors.device))
            if boxes.shape[0] == 0:  # an image without objects: every anchor is background
                labels.append(matches)
                box_targets.append(torch.zeros_like(anchors))
                continue
            positive = matches >= 0
            index = matches.clamp(min=0)
            labels.append(torch.where(positive, target["labels"].to(anchors.device)[index], matches))
            codes = self.box_coder.encode(boxes[index], anchors)
            box_targets.append(torch.where(positive[:, None], codes, torch.zeros_like(codes)))
        return torch.stack(labels), torch.stack(box_targets)

    def forward(self, box_regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
                targets: list[dict]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            labels, box_targets = self.match(anchors, targets)
        box_regression, class_logits = box_regression.float(), class_logits.float()
        positive = labels >= 0
        num_positive = global_normalizer(positive.sum()) if self.training else positive.sum().clamp(min=1).float()
        loss_box = F.smooth_l1_loss(box_regression[positive], box_targets[positive], beta=1.0, reduction="sum")
        if self.kind == "focal":
            loss_cls = self._focal(class_logits, labels)
        else:
            loss_cls = self._hard_negative_ce(class_logits, labels)
        return {"loss_box": loss_box / num_positive, "loss_cls": loss_cls / num_positive}

    def _focal(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = labels != IGNORE
        one_hot = torch.zeros_like(logits)
        positive = labels >= 0
        one_hot[positive, labels[positive]] = 1.0  # background rows stay all zero
        return sigmoid_focal_loss(logits[valid], one_hot[valid], alpha=self.alpha, gamma=self.gamma,
                                  reduction="sum")

    def _hard_negative_ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over K+1 logits (0 = background) on positives and the hardest negatives, at most
        ``neg_pos_ratio`` negatives per positive in each image."""
        targets = (labels + 1).clamp(min=0)  # background and ignore -> 0
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(labels)
        positive = labels >= 0
        negative = labels == BACKGROUND
        hardness = torch.where(negative, ce.detach(), torch.full_like(ce, -1.0))
        order = hardness.argsort(dim=1, descending=True).argsort(dim=1)  # rank of each anchor
        num_negative = (positive.sum(dim=1, keepdim=True) * self.neg_pos_ratio).long()
        hard_negative = negative & (order < num_negative)
        return ce[positive | hard_negative].sum()
