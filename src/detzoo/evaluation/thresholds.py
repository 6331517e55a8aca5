"""The score threshold that maximises F1 per class (as Ultralytics prints with its curves): from a class's
detections ranked by score with their running precision and recall, the detection at which
F1 = 2PR / (P + R) is highest gives the threshold that keeps it and everything above. ``detzoo eval`` prints
the table and writes it to ``metrics.json``: a starting point for ``--score`` of predict and serve."""

from __future__ import annotations

import numpy as np
from pycocotools.cocoeval import COCOeval


def best_f1(scores: np.ndarray, recall: np.ndarray, precision: np.ndarray) -> dict[str, float] | None:
    """``scores`` in descending order with the recall and precision of keeping each prefix -> {score, f1,
    precision, recall} at the best F1 (the highest score among equal F1s: fewer detections), None when no
    detection is correct."""
    if not len(scores):
        return None
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    f1 = np.where(recall + precision > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0.0)
    best = int(np.argmax(f1))  # the first maximum: the highest score reaching it
    if f1[best] <= 0:
        return None
    return {"score": float(scores[best]), "f1": float(f1[best]), "precision": float(precision[best]),
            "recall": float(recall[best])}


def coco_ranked(evaluator: COCOeval, class_index: int, iou: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(scores descending, recall, precision) of one class at ``iou``, area "all", the last maxDets, from
    ``evaluateImg``'s per-image matches (the same bookkeeping as ``COCOeval.accumulate``, without its
    interpolation); None without ground truth."""
    params = evaluator.params
    iou_index = int(np.argmin(np.abs(np.asarray(params.iouThrs) - iou)))
    images, areas, max_det = len(params.imgIds), len(params.areaRng), params.maxDets[-1]
    start = class_index * areas * images  # area "all" is the first range
    per_image = [e for e in evaluator.evalImgs[start: start + images] if e is not None]
    if not per_image:
        return None
    ignored_gt = np.concatenate([e["gtIgnore"] for e in per_image])
    positives = int(np.count_nonzero(ignored_gt == 0))
    if positives == 0:
        return None
    scores = np.concatenate([e["dtScores"][:max_det] for e in per_image])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["dtMatches"][:, :max_det] for e in per_image], axis=1)[iou_index, order]
    ignored = np.concatenate([e["dtIgnore"][:, :max_det] for e in per_image], axis=1)[iou_index, order]
    true_pos = np.cumsum((matched != 0) & ~ignored)
    false_pos = np.cumsum((matched == 0) & ~ignored)
    keep = ~ignored  # an ignored detection (matched to a crowd region) is not a threshold anyone picks
    recall = true_pos / positives
    precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
    return scores[order][keep], recall[keep], precision[keep]


def f1_table(thresholds: dict[str, dict | None], iou: float = 0.5) -> str:
    """The printed table: class, F1-optimal score, F1, precision and recall there (matches at ``iou``)."""
    width = max([len(n) for n in thresholds] + [5])
    lines = [f"{'class':<{width}}  best-F1 score     F1  precision  recall   (matches at IoU {iou:g})"]
    for name, best in thresholds.items():
        lines.append(f"{name:<{width}}  {best['score']:13.3f}  {best['f1']:5.3f}  {best['precision']:9.3f}  "
                     f"{best['recall']:6.3f}" if best else f"{name:<{width}}            n/a")
    return "\n".join(lines)
