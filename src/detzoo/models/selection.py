"""Selection settings chosen at prediction time: the score threshold, the NMS IoU threshold, the detections cap
and a class filter, for `detzoo predict`, `detzoo eval`, the Python API and the service.

Every detector keeps its own settings on one module (``Detector.selection``: the SSD ``Postprocess``, Faster
R-CNN's ``RoIHeads``) under the names ``score_thresh``, ``nms_thresh`` and ``detections_per_img``;
``select_with`` sets them for one call, puts them back and applies the class filter (before the cap, so that
"10 detections of class person" means ten persons). A graph that already ends with NMS (an ONNX export
with ``--nms``, two-stage exports) can only be made stricter after the fact: ``apply_to_final`` filters by
score and class, caps the count and runs a class-aware NMS at a lower IoU, and refuses looser settings.

Two score thresholds: the model's own (``score_thresh``, what predict's selection, the service and exported
files start from) and the *evaluation* threshold every mAP is computed at (``evaluation_options``): low, as
the references evaluate, with the COCO protocol's cap of 100 detections per image, so that a model whose
scores are still small (focal loss early in training) is ranked on how it orders its boxes, not cut to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torchvision.ops import batched_nms

from ..common.errors import ConfigError

UNCAPPED = 2**31 - 1  # a detections cap that never cuts
EVAL_MAX_DETECTIONS = 100  # the COCO protocol ranks up to 100 detections per image, whatever their score
# Evaluation thresholds of the references: torchvision's SSDlite keeps scores >= 0.001 (SSD300 0.01), Ultralytics
# validates at 0.001; torchvision's Faster R-CNN evaluates at its box_score_thresh 0.05 (as detectron2 and
# MMDetection do for two-stage models: their second stage's softmax scores are not small early on).
SINGLE_STAGE_EVAL_SCORE = 0.001
TWO_STAGE_EVAL_SCORE = 0.05
SETTINGS = {"score_threshold": "score_thresh", "iou_threshold": "nms_thresh", "max_detections": "detections_per_img"}


@dataclass(frozen=True)
class SelectOptions:
    """``None`` keeps the model's own value. ``classes`` are label indices (0..K-1) to keep."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.iou_threshold is not None and not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_detections is not None and self.max_detections < 1:
            raise ConfigError(f"max_detections must be at least 1, got {self.max_detections}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    @classmethod
    def from_names(cls, class_names: list[str], names: list[str] | None = None, **settings) -> SelectOptions:
        """``classes`` given by name (what users type); an unknown name is a ConfigError listing the known ones."""
        if not names:
            return cls(**settings)
        unknown = [n for n in names if n not in class_names]
        if unknown:
            raise ConfigError(f"unknown class name(s) {', '.join(unknown)}; the model knows: "
                              f"{', '.join(class_names)}")
        return cls(**settings, classes=tuple(class_names.index(n) for n in names))

    def check_labels(self, num_classes: int) -> None:
        bad = [c for c in self.classes or () if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"class index(es) {bad} out of range 0..{num_classes - 1}")

    def with_defaults(self, defaults: SelectOptions | None) -> SelectOptions:
        """These options, with unset values taken from ``defaults``."""
        if defaults is None:
            return self
        return replace(defaults, **{k: v for k, v in self.__dict__.items() if v is not None})


@contextmanager
def overridden(holder, options: SelectOptions | None) -> Iterator[None]:
    """Set ``holder``'s score / NMS / cap settings from ``options`` for the duration of the block."""
    changes = {attribute: getattr(options, option) for option, attribute in SETTINGS.items()
               if options is not None and getattr(options, option) is not None}
    saved = {attribute: getattr(holder, attribute) for attribute in changes}
    for attribute, value in changes.items():
        setattr(holder, attribute, value)
    try:
        yield
    finally:
        for attribute, value in saved.items():
            setattr(holder, attribute, value)


def select_with(holder, options: SelectOptions | None, run: Callable[[], list[dict]]) -> list[dict]:
    """``run()`` (per-image {boxes, scores, labels}, best first) with ``holder``'s settings overridden by
    ``options``. With a class filter the model returns every detection that survives NMS and the cap is applied
    after the filter."""
    if options is None:
        return run()
    model_options = replace(options, max_detections=UNCAPPED) if options.classes is not None else options
    with overridden(holder, model_options):
        outputs = run()
    if options.classes is None:
        return outputs
    cap = options.max_detections or holder.detections_per_img
    return [{key: value[:cap] for key, value in keep_classes(output, options.classes).items()} for output in outputs]


def keep_classes(output: dict, classes: tuple[int, ...] | None) -> dict:
    """Only the detections of ``classes`` (all when None)."""
    if classes is None:
        return output
    keep = torch.isin(output["labels"], torch.tensor(classes, dtype=output["labels"].dtype,
                                                     device=output["labels"].device))
    return {key: value[keep] for key, value in output.items()}


def apply_to_final(output: dict, options: SelectOptions | None, baked: dict, source: str) -> dict:
    """Stricter selection on detections that already went through NMS with the ``baked`` settings (the
    ``postprocess`` entry of the file's metadata: score_thresh, nms_thresh, detections_per_img). Looser settings
    cannot be recovered from them: a ConfigError says so."""
    if options is None:
        return output
    baked = {option: baked[attribute] for option, attribute in SETTINGS.items()}
    looser = []
    if options.score_threshold is not None and options.score_threshold < baked["score_threshold"]:
        looser.append(f"score_threshold {options.score_threshold} < {baked['score_threshold']}")
    if options.iou_threshold is not None and options.iou_threshold > baked["iou_threshold"]:
        looser.append(f"iou_threshold {options.iou_threshold} > {baked['iou_threshold']}")
    if options.max_detections is not None and options.max_detections > baked["max_detections"]:
        looser.append(f"max_detections {options.max_detections} > {baked['max_detections']}")
    if looser:
        raise ConfigError(f"{source} ends with NMS (score {baked['score_threshold']}, IoU {baked['iou_threshold']}, "
                          f"{baked['max_detections']} per image) and cannot be made looser: {'; '.join(looser)}. "
                          "Export without --nms (SSD models) to choose these at prediction time")
    output = keep_classes(output, options.classes)
    if options.score_threshold is not None:
        keep = output["scores"] >= options.score_threshold
        output = {key: value[keep] for key, value in output.items()}
    if options.iou_threshold is not None and options.iou_threshold < baked["iou_threshold"]:
        keep = batched_nms(output["boxes"], output["scores"], output["labels"], options.iou_threshold)
        output = {key: value[keep] for key, value in output.items()}
    if options.max_detections is not None:
        output = {key: value[: options.max_detections] for key, value in output.items()}
    return output


def evaluation_score_threshold(holder) -> float:
    """The evaluation threshold of the model whose selection module is ``holder``: its class's
    ``eval_score_thresh`` (the SSD ``Postprocess``: 0.001), else the two-stage one (0.05)."""
    return getattr(holder, "eval_score_thresh", TWO_STAGE_EVAL_SCORE)


def evaluation_options(holder, score_threshold: float | None = None) -> SelectOptions:
    """The selection every mAP is computed with: ``score_threshold`` (default: the model's evaluation
    threshold), the model's NMS IoU, at most ``EVAL_MAX_DETECTIONS`` per image."""
    score = evaluation_score_threshold(holder) if score_threshold is None else score_threshold
    return SelectOptions(score_threshold=score, max_detections=EVAL_MAX_DETECTIONS)


def final_evaluation_options(baked: dict, score_threshold: float | None = None) -> tuple[SelectOptions, str]:
    """Evaluation options for a graph that already ends with NMS run with ``baked`` settings, which can only be
    made stricter: ``score_threshold`` (default: the baked one) raised to the baked one where lower, at most
    ``EVAL_MAX_DETECTIONS`` per image; and a note when the wanted threshold could not be honoured ("" else)."""
    wanted = baked["score_thresh"] if score_threshold is None else score_threshold
    score = max(wanted, baked["score_thresh"])
    note = (f"the file's NMS kept scores >= {baked['score_thresh']:g} only: evaluated at that threshold, not "
            f"{wanted:g} (export without --nms to evaluate lower)" if score > wanted else "")
    return SelectOptions(score_threshold=score, max_detections=min(EVAL_MAX_DETECTIONS,
                                                                   baked["detections_per_img"])), note
