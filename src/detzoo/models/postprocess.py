"""Vectorised single-stage post-processing: one score threshold over all (anchor, class) pairs, one
pre-NMS top-k, one class-aware ``batched_nms``, at most ``detections_per_img`` per image. No per-class loop."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image

from .box_coder import BoxCoder


def class_scores(class_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits -> per-class scores [..., K]: sigmoid, or softmax without the background column."""
    if kind == "focal":
        return class_logits.sigmoid()
    return class_logits.softmax(dim=-1)[..., 1:]


class Postprocess(nn.Module):
    def __init__(self, score_kind: str = "focal", score_thresh: float = 0.05, nms_thresh: float = 0.6,
                 pre_nms_top_k: int = 1000, detections_per_img: int = 100, box_coder: BoxCoder | None = None):
        super().__init__()
        self.score_kind = score_kind
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_top_k = pre_nms_top_k
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder or BoxCoder()

    def forward(self, box_regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
                image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        scores = class_scores(class_logits.float(), self.score_kind)
        return [self.select(box_regression[i].float(), scores[i], anchors, image_sizes[i])
                for i in range(scores.shape[0])]

    def select(self, box_regression: torch.Tensor, scores: torch.Tensor, anchors: torch.Tensor,
               image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """One image: regression [A, 4], scores [A, K] -> boxes, scores, labels (at most detections_per_img)."""
        num_classes = scores.shape[1]
        flat = scores.flatten()
        candidates = (flat > self.score_thresh).nonzero().squeeze(1)
        if candidates.numel() > self.pre_nms_top_k:
            top = flat[candidates].topk(self.pre_nms_top_k).indices
            candidates = candidates[top]
        kept_scores = flat[candidates]
        anchor_index = torch.div(candidates, num_classes, rounding_mode="floor")
        labels = candidates % num_classes
        boxes = self.box_coder.decode(box_regression[anchor_index], anchors[anchor_index])
        boxes = clip_boxes_to_image(boxes, image_size)
        keep = batched_nms(boxes, kept_scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]}
