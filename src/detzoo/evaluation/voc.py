"""Pascal VOC detection metric: per-class AP at one IoU threshold (0.5), with the VOC2007 11-point
interpolation (``eval.metric: voc07``) or the area under the interpolated precision/recall curve
(``voc07_area``, the VOC2010+ rule), and their mean over the classes that have ground truth.

Written by hand (a few dozen lines): pycocotools has no VOC mode and no maintained package scores in-memory
detections this way. It follows the VOC devkit: a class's detections in descending score order; each takes
the ground truth of its image and class with the highest IoU; above the threshold it is a true positive if
that ground truth is still free, a false positive if it was already taken, and is ignored (neither) if it is
``difficult`` (COCO crowd boxes are treated the same); otherwise it is a false positive. Difficult objects do
not count towards recall. IoU is computed on continuous coordinates (torchvision ``box_iou``), as
pytorch-ssd's evaluation does, not with the devkit's +1-pixel convention.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torchvision.ops import box_iou

from ..data.records import DetectionData
from .base import EvalResult, Evaluator, per_class_table
from .thresholds import best_f1, f1_table


def average_precision(recall: np.ndarray, precision: np.ndarray, use_11_point: bool) -> float:
    """AP from a precision/recall curve (detections in descending score order)."""
    if use_11_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0.0, 1.0, 11)]))
    recall, precision = interpolated_curve(recall, precision)
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def interpolated_curve(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve the area AP integrates: recall from 0 to 1, precision replaced by its envelope (the best
    precision at this or a higher recall). Drawn as steps (precision[i] on (recall[i-1], recall[i]]), its area
    is the area AP exactly; the 11-point AP is its mean at recall 0, 0.1, .., 1."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    return recall, np.maximum.accumulate(precision[::-1])[::-1]


def match_detections(boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_ignore: np.ndarray,
                     iou_thresh: float) -> np.ndarray:
    """One image and class; ``boxes`` in descending score order -> per detection 1 (true positive),
    0 (false positive) or -1 (matched an ignored ground truth)."""
    outcome = np.zeros(len(boxes), dtype=np.int64)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return outcome
    best_iou, best_gt = box_iou(boxes, gt_boxes).max(dim=1)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.flatnonzero(best_iou.numpy() > iou_thresh):
        j = int(best_gt[i])
        if gt_ignore[j]:
            outcome[i] = -1
        elif not taken[j]:
            outcome[i], taken[j] = 1, True
    return outcome


class VOCEvaluator(Evaluator):
    def __init__(self, data: DetectionData, use_11_point: bool = True, iou_thresh: float = 0.5):
        super().__init__(data)
        self.use_11_point = use_11_point
        self.iou_thresh = iou_thresh

    def _ground_truth(self) -> dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]]:
        """(image_id, label) -> (boxes, ignore flags)."""
        out = {}
        for record in self.data.records:
            ignore = record.difficult | record.iscrowd
            for label in np.unique(record.labels):
                mask = record.labels == label
                out[(record.image_id, int(label))] = (torch.from_numpy(record.boxes[mask]).float(), ignore[mask])
        return out

    def class_curves(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """label -> (recall, precision, scores) over its detections ranked by score, or None without
        (non-ignored) ground truth."""
        ground_truth = self._ground_truth()
        known_images = {r.image_id for r in self.data.records}
        positives = defaultdict(int)
        for (_, label), (_, ignore) in ground_truth.items():
            positives[label] += int((~ignore).sum())
        scores: dict[int, list[np.ndarray]] = defaultdict(list)
        outcomes: dict[int, list[np.ndarray]] = defaultdict(list)
        for det in self.detections:
            if det.image_id not in known_images:
                raise ValueError(f"detections for image_id {det.image_id}, which is not in {self.data.source}")
            for label in det.labels.unique().tolist():
                mask = det.labels == label
                order = det.scores[mask].argsort(descending=True, stable=True)
                boxes, label_scores = det.boxes[mask][order].float(), det.scores[mask][order]
                gt_boxes, gt_ignore = ground_truth.get((det.image_id, label), (torch.zeros(0, 4), np.zeros(0, bool)))
                scores[label].append(label_scores.numpy())
                outcomes[label].append(match_detections(boxes, gt_boxes, gt_ignore, self.iou_thresh))
        curves = {}
        for label in range(len(self.data.class_names)):
            if positives[label] == 0:
                curves[label] = None
                continue
            label_scores = np.concatenate(scores[label]) if scores[label] else np.zeros(0)
            outcome = np.concatenate(outcomes[label]) if outcomes[label] else np.zeros(0, dtype=np.int64)
            ranking = np.argsort(-label_scores, kind="stable")
            outcome = outcome[ranking]
            true_pos = np.cumsum(outcome == 1)
            false_pos = np.cumsum(outcome == 0)
            recall = true_pos / positives[label]
            precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
            curves[label] = (recall, precision, label_scores[ranking])
        return curves

    def evaluate(self) -> EvalResult:
        ranked = self.class_curves()
        names = self.data.class_names
        # an ignored (difficult) match counts neither way; its score is never the best F1's (F1 does not rise)
        f1 = {names[k]: best_f1(r[2], r[0], r[1]) for k, r in ranked.items() if r is not None}
        curves = {k: (r[0], r[1]) if r is not None else None for k, r in ranked.items()}
        aps = {method: {names[k]: (average_precision(*c, use_11_point=method == "11point") if c is not None
                                   else float("nan")) for k, c in curves.items()}
               for method in ("11point", "area")}
        means = {method: float(np.nanmean(list(v.values()))) if any(c is not None for c in curves.values())
                 else 0.0 for method, v in aps.items()}
        chosen = "11point" if self.use_11_point else "area"
        metrics = {"mAP": means[chosen], "mAP_11point": means["11point"], "mAP_area": means["area"]}
        title = f"AP@{self.iou_thresh:g} ({'11-point' if self.use_11_point else 'area'})"
        with_gt = sum(c is not None for c in curves.values())
        report = "\n".join([per_class_table(aps[chosen], title), "", f1_table(f1, self.iou_thresh),
                            f"VOC mAP@{self.iou_thresh:g} {metrics['mAP']:.4f}  (11-point {means['11point']:.4f}, "
                            f"area {means['area']:.4f}; {with_gt} classes with ground truth, "
                            f"{len(self.data.records)} images, difficult objects ignored)"])
        iou = f"AP@{self.iou_thresh:g}"
        curves = {f"{iou} (area)": {names[k]: interpolated_curve(*c) for k, c in curves.items() if c is not None}}
        class_aps = {f"{iou} (area)": {n: v for n, v in aps["area"].items() if v == v},
                     f"{iou} (11-point)": {n: v for n, v in aps["11point"].items() if v == v}}
        return EvalResult(metrics, aps[chosen], report, curves=curves, class_aps=class_aps, f1_thresholds=f1)
