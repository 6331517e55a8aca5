"""SSD losses: sigmoid focal loss over the K foreground logits (torchvision ``sigmoid_focal_loss``) or
softmax cross-entropy over K+1 logits with hard negative mining, plus smooth L1 on positive anchors; both
summed over the batch and divided by the number of positive anchors (at least 1). Crowd boxes and VOC
``difficult`` objects are ignore regions (``models/matching.py``): their anchors count neither way.

The whole batch is one computation on [N, A] tensors: anchors that do not count are multiplied out with
``torch.where`` instead of being cut out with a mask, so the step dispatches the same operators whatever
the batch size and never waits for the device (docs/design.md, "The SSD loss is batched").

Under DDP (in training) the divisor is the positive count of the whole global batch divided by the number
of processes (``common.distributed.global_normalizer``), so DDP's gradient average equals the gradient of
one process holding the global batch, as the recipe ("divide by the positives in the batch") means."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from ..common.distributed import global_normalizer
from ..data.targets import Targets
from .box_coder import BoxCoder
from .matching import BACKGROUND, IGNORE, match_anchors


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

    @torch.no_grad()
    def match(self, anchors: torch.Tensor, targets: Targets | Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> labels [N, A] (class index, BACKGROUND or IGNORE), box targets [N, A, 4] (encoded; 0 where not
        positive). ``targets``: a batch's ``Targets`` or per-image target dicts (padded here)."""
        targets = Targets.from_dicts(targets).to(anchors.device)
        matches = match_anchors(anchors, targets, self.iou_threshold)  # [N, A]
        positive = matches >= 0
        index = matches.clamp(min=0)
        labels = torch.where(positive, targets.labels.gather(1, index), matches)
        boxes = targets.boxes.gather(1, index[..., None].expand(*index.shape, 4))
        codes = self.box_coder.encode(boxes, anchors)  # anchors [A, 4] broadcast over the batch
        return labels, torch.where(positive[..., None], codes, 0.0)

    def forward(self, box_regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
                targets: Targets | Sequence[dict]) -> dict[str, torch.Tensor]:
        labels, box_targets = self.match(anchors, targets)
        box_regression, class_logits = box_regression.float(), class_logits.float()
        positive = labels >= 0
        num_positive = global_normalizer(positive.sum()) if self.training else positive.sum().clamp(min=1).float()
        box_terms = F.smooth_l1_loss(box_regression, box_targets, beta=1.0, reduction="none")
        loss_box = torch.where(positive[..., None], box_terms, 0.0).sum()
        if self.kind == "focal":
            loss_cls = self._focal(class_logits, labels)
        else:
            loss_cls = self._hard_negative_ce(class_logits, labels)
        return {"loss_box": loss_box / num_positive, "loss_cls": loss_cls / num_positive}

    def _focal(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Over every anchor that is not ignored; background anchors have an all-zero target row."""
        classes = torch.arange(logits.shape[-1], device=logits.device)
        one_hot = (labels[..., None] == classes).to(logits.dtype)  # BACKGROUND and IGNORE match no class
        terms = sigmoid_focal_loss(logits, one_hot, alpha=self.alpha, gamma=self.gamma, reduction="none")
        return torch.where((labels != IGNORE)[..., None], terms, 0.0).sum()

    def _hard_negative_ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over K+1 logits (0 = background) on positives and the hardest negatives, at most
        ``neg_pos_ratio`` negatives per positive in each image."""
        targets = (labels + 1).clamp(min=0)  # background and ignore -> 0
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(labels)
        positive = labels >= 0
        negative = labels == BACKGROUND
        hardness = torch.where(negative, ce.detach(), -1.0)  # ce >= 0: every negative ranks before the rest
        order = hardness.sort(dim=1, descending=True, stable=True).indices
        ranks = torch.arange(labels.shape[1], device=labels.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, ranks)  # rank of each anchor in its image
        num_negative = (positive.sum(dim=1, keepdim=True) * self.neg_pos_ratio).long()
        hard_negative = negative & (rank < num_negative)
        return torch.where(positive | hard_negative, ce, 0.0).sum()
