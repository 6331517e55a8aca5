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

    @property
    def score(self) -> float:
        return self.metrics[self.primary]


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
