"""Vectorised single-stage post-processing: one score threshold over all (anchor, class) pairs, the best
``pre_nms_top_k`` candidates of each class, one class-aware ``batched_nms``, at most ``detections_per_img`` per
image. No per-class loop: the per-class ranks come from one stable sort of the candidates, listed best first.
The selection looks at the best candidates first and stops as soon as the per-image cap is certain
(``select_image``): the result is exactly that of ranking and NMS over every candidate.

Candidates are capped per class, as torchvision's SSD (``topk_candidates``) and the MindSpore and pytorch-ssd
references do: one global cap over every (anchor, class) pair lets the classes of a crowded image, or COCO's
low threshold on 51150 x 80 pairs, starve the others before NMS has seen them.

Two steps, so that an exported graph can stop after the first: ``decode`` (regression + logits -> boxes in
input pixels + per-class scores for every anchor) and ``select`` (the threshold / top-k / NMS / cap). The ONNX
Runtime backend runs the same ``select`` on the boxes and scores an exported graph returns.
``select_in_graph`` is the same selection written with fixed-shape ops and the ONNX ``NonMaxSuppression``
operator, for graphs that end with NMS; it is hand-written because torchvision's ``nms`` exports for one
image only and the dynamo exporter cannot trace ``batched_nms`` (data-dependent shapes).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image, nms

from .box_coder import BoxCoder


def class_scores(class_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits -> per-class scores [..., K]: sigmoid, or softmax without the background column."""
    if kind == "focal":
        return class_logits.sigmoid()
    return class_logits.softmax(dim=-1)[..., 1:]


PRE_NMS_TOP_K = 400  # candidates per class before NMS: torchvision SSD's ``topk_candidates``
FIRST_ROUND = 1000  # candidates the selection looks at first (at least 4 x the per-image cap)


class Postprocess(nn.Module):
    eval_score_thresh = 0.001  # what mAP is computed at (``models/selection.py``), apart from ``score_thresh``

    def __init__(self, score_kind: str = "focal", score_thresh: float = 0.05, nms_thresh: float = 0.6,
                 pre_nms_top_k: int = PRE_NMS_TOP_K, detections_per_img: int = 100,
                 box_coder: BoxCoder | None = None):
        super().__init__()
        self.score_kind = score_kind
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_top_k = pre_nms_top_k
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder or BoxCoder()

    def settings(self) -> dict:
        """The selection settings (what an exported model needs to run ``select`` elsewhere)."""
        return {"score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                "pre_nms_top_k": self.pre_nms_top_k, "detections_per_img": self.detections_per_img}

    def forward(self, box_regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
                image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        return self.select(*self.decode(box_regression, class_logits, anchors), image_sizes)

    def decode(self, box_regression: torch.Tensor, class_logits: torch.Tensor,
               anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N,A,4] regression, [N,A,C] logits -> boxes [N,A,4] xyxy in input pixels, scores [N,A,K]."""
        return (self.box_coder.decode(box_regression.float(), anchors),
                class_scores(class_logits.float(), self.score_kind))

    def select(self, boxes: torch.Tensor, scores: torch.Tensor,
               image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Decoded boxes [N,A,4] and scores [N,A,K] -> per image {boxes, scores, labels}."""
        return [self.select_image(boxes[i], scores[i], image_sizes[i]) for i in range(scores.shape[0])]

    def select_image(self, boxes: torch.Tensor, scores: torch.Tensor,
                     image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """One image: boxes [A, 4], scores [A, K] -> boxes, scores, labels (at most detections_per_img).

        Exactly threshold -> the best ``pre_nms_top_k`` of each class -> ``batched_nms`` -> the best
        ``detections_per_img``, computed on the best candidates first: a candidate's rank in its class and
        its fate in greedy NMS depend on better-scored candidates only, so the best ``m`` candidates decide
        their own outcome, and once ``detections_per_img`` of them survive no worse one can reach the result.
        ``m`` starts at ``FIRST_ROUND`` and grows 4x until then (at COCO's 0.001 threshold tens of thousands
        of pairs pass; a few thousand decide)."""
        num_classes = scores.shape[1]
        flat = scores.flatten()
        candidates = (flat > self.score_thresh).nonzero().squeeze(1)
        candidate_scores = flat[candidates]
        size = max(FIRST_ROUND, 4 * self.detections_per_img)
        while True:
            best = candidates[candidate_scores.topk(min(size, candidates.numel())).indices]  # best first
            best = best[within_top_k_of_class(best % num_classes, self.pre_nms_top_k)]
            kept_scores, labels = flat[best], best % num_classes
            kept_boxes = clip_boxes_to_image(boxes[torch.div(best, num_classes, rounding_mode="floor")], image_size)
            keep = batched_nms(kept_boxes, kept_scores, labels, self.nms_thresh)
            if keep.numel() >= self.detections_per_img or size >= candidates.numel():
                break
            size *= 4
        keep = keep[: self.detections_per_img]
        return {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]}

    def select_in_graph(self, boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``select`` for a whole batch with exportable ops -> flat ``batch_index [M]``, ``boxes [M,4]``,
        ``scores [M]``, ``labels [M]``, images in order, each image's detections best first.

        Equivalent to ``select``: each class's top-k over the anchors followed by NMS's score threshold keeps
        the same candidates as threshold-then-top-k per class; class-aware NMS is one NMS over boxes shifted
        apart per class (as ``batched_nms`` does); ``max_output_boxes_per_class`` of the single shifted class
        is the cap."""
        batch, num_anchors, num_classes = scores.shape
        boxes = clip_boxes_to_image(boxes, image_size)
        top_scores, anchor_index = scores.topk(min(self.pre_nms_top_k, num_anchors), dim=1)  # [N, k, K]
        labels = torch.arange(num_classes, device=scores.device).expand_as(anchor_index).reshape(batch, -1)
        top_scores, anchor_index = top_scores.reshape(batch, -1), anchor_index.reshape(batch, -1)
        candidates = boxes.gather(1, anchor_index.unsqueeze(-1).expand(-1, -1, 4))
        shift = labels.unsqueeze(-1).to(candidates.dtype) * float(max(image_size) + 1)
        selected = OnnxNonMaxSuppression.apply(candidates + shift, top_scores.unsqueeze(1),
                                               self.detections_per_img, self.nms_thresh, self.score_thresh)
        image = selected[:, 0]
        flat = image * top_scores.shape[1] + selected[:, 2]  # flat indices: a plain Gather in the graph
        return (image, candidates.reshape(-1, 4)[flat], top_scores.reshape(-1)[flat], labels.reshape(-1)[flat])


def within_top_k_of_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """bool [C]: which candidates, listed best first, are among the ``k`` best of their class. A stable sort
    by class keeps each class's candidates best first; a candidate's rank is its position minus its class's
    first position (from the class counts)."""
    if labels.numel() <= k:
        return torch.ones_like(labels, dtype=torch.bool)
    by_class = labels.argsort(stable=True)
    grouped = labels[by_class]
    counts = torch.bincount(grouped)
    rank = torch.arange(grouped.numel(), device=labels.device) - (counts.cumsum(0) - counts)[grouped]
    within = torch.empty_like(labels, dtype=torch.bool)
    within[by_class] = rank < k
    return within


class OnnxNonMaxSuppression(torch.autograd.Function):
    """The ONNX ``NonMaxSuppression`` operator: boxes [N, B, 4], scores [N, C, B] -> selected [M, 3] rows of
    (batch, class, box), per image and class in descending score order; boxes with score <= score_thresh
    are dropped, at most ``max_per_class`` kept per (image, class). Eager: torchvision's ``nms``."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thresh: float,
                score_thresh: float) -> torch.Tensor:
        rows = []
        for image in range(scores.shape[0]):
            for cls in range(scores.shape[1]):
                index = (scores[image, cls] > score_thresh).nonzero().squeeze(1)
                index = index[nms(boxes[image, index], scores[image, cls, index], iou_thresh)[:max_per_class]]
                rows.append(torch.stack([torch.full_like(index, image), torch.full_like(index, cls), index], 1))
        return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_thresh: float, score_thresh: float):
        def constant(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, constant(max_per_class, torch.long),
                    constant(iou_thresh, torch.float), constant(score_thresh, torch.float))
