"""The evaluator interface (detectron2 style) and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..common.structures import Detections
from ..data.records import DetectionData


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat numbers, logged per epoch; "mAP" is the headline figure
    per_class: dict[str, float]  # class name -> AP
    report: str  # the text printed for a human (summary + per-class table)
    primary: str = "mAP"  # the metric that picks best.pt
    extra: dict = field(default_factory=dict)
    # What the pictures draw, taken from the computation that made the figures above (never recomputed):
    # curve name -> class name -> (recall, precision), for classes with ground truth; the area under each
    # curve is that class's AP of the same name in ``class_aps`` (see each evaluator for the interpolation).
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    class_aps: dict[str, dict[str, float]] = field(default_factory=dict)  # AP name -> class name -> AP
    # class name -> {score, f1, precision, recall} at the score threshold that maximises F1 (None: no hit)
    f1_thresholds: dict[str, dict | None] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # "evaluation" / "model": the score thresholds

    @property
    def score(self) -> float:
        return self.metrics[self.primary]

    def set_thresholds(self, evaluation: float | None, model: float | None, note: str = "") -> None:
        """Record (and add to the report) the score threshold the detections were evaluated at and the model's
        own (what predict, serve and exported files select with)."""
        self.thresholds = {"evaluation": evaluation, "model": model}
        self.report += "\n" + thresholds_line(evaluation, model) + (f"\nnote: {note}" if note else "")

    def to_json(self) -> dict:
        """What ``metrics.json`` holds: metrics, AP per class, both thresholds, the F1-optimal scores."""
        clean = {name: (None if value != value else value) for name, value in self.per_class.items()}
        return {"metrics": self.metrics, "primary": self.primary, "per_class": clean,
                "thresholds": self.thresholds, "f1_thresholds": self.f1_thresholds}


def thresholds_line(evaluation: float | None, model: float | None) -> str:
    """The line saying which score threshold an mAP was computed at, apart from the deployment one."""
    shown = "the model's own" if evaluation is None else f"{evaluation:g}"
    model_part = "" if model is None else f"; the model's own threshold (predict, serve, export): {model:g}"
    return f"evaluated at score >= {shown}, at most 100 detections per image{model_part}"


class Evaluator:
    def __init__(self, data: DetectionData):
        self.data = data
        self.detections: list[Detections] = []

    def reset(self) -> None:
        self.detections = []

    def process(self, detections: list[Detections]) -> None:
        self.detections.extend(detections)

    def evaluate(self) -> EvalResult:
        raise NotImplementedError


def per_class_table(per_class: dict[str, float], title: str) -> str:
    width = max([len(n) for n in per_class] + [5])
    lines = [f"{'class':<{width}}  {title}"]
    lines += [f"{name:<{width}}  {ap:6.3f}" if ap == ap else f"{name:<{width}}     n/a"
              for name, ap in per_class.items()]
    return "\n".join(lines)


def evaluate_detections(detections: list[Detections], data: DetectionData, metric: str, iou_thresh: float = 0.5) -> EvalResult:
    """Score one Detections per image of ``data`` with the named metric."""
    evaluator = build_evaluator(metric, data, iou_thresh)
    evaluator.process(detections)
    return evaluator.evaluate()


def build_evaluator(metric: str, data: DetectionData, iou_thresh: float = 0.5) -> Evaluator:
    if metric == "coco":
        from .coco import COCOEvaluator

        return COCOEvaluator(data)
    if metric in ("voc07", "voc07_area"):
        from .voc import VOCEvaluator

        return VOCEvaluator(data, use_11_point=metric == "voc07", iou_thresh=iou_thresh)
    raise ValueError(f"unknown metric '{metric}' (coco, voc07, voc07_area)")
