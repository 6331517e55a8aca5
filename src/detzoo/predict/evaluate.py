"""What ``detzoo eval`` and ``Model.val`` do: a Predictor's detections on a dataset at the evaluation score
threshold (``models.selection.evaluation_options``: low, 100 per image; not predict's), scored (COCO with
pycocotools, or VOC), written as COCO results (``detections.json``) with the figures, both thresholds and the
F1-optimal score per class (``metrics.json``) beside the evaluation's pictures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..common.config import DatasetSpec
from ..common.errors import ConfigError
from ..common.files import write_json
from ..common.structures import Detections, write_coco_results
from ..data.formats import read_dataset
from ..data.preflight import apply_findings, check_splits
from ..engine.pictures import write_evaluation_pictures
from ..evaluation import EvalResult, evaluate_detections
from .predictor import Predictor


@dataclass
class Evaluation:
    """The scores (``result``: ``metrics``, ``per_class``, the printed ``report``) and what was written."""

    result: EvalResult
    detections: list[Detections]
    detections_file: Path
    pictures: list[Path]
    metrics_file: Path | None = None

    @property
    def f1_thresholds(self) -> dict[str, dict | None]:
        """Class name -> {score, f1, precision, recall} at the score threshold that maximises F1."""
        return self.result.f1_thresholds

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics

    @property
    def per_class(self) -> dict[str, float]:
        return self.result.per_class

    @property
    def report(self) -> str:
        return self.result.report

    @property
    def score(self) -> float:
        """The headline figure (COCO mAP@[.5:.95], or the VOC AP the metric names)."""
        return self.result.score


def evaluate_dataset(predictor: Predictor, spec: DatasetSpec, out: str | Path, classes: list[str] | None = None,
                     metric: str = "coco", iou: float = 0.5, skip_bad: bool = False,
                     score_threshold: float | None = None) -> Evaluation:
    """Read the dataset for the model's classes (matched by name; ``classes``: the dataset's names in the
    model's order, for formats without names), predict every image at the evaluation threshold
    (``score_threshold``, default the model's: 0.001 SSD, 0.05 Faster R-CNN) keeping at most 100 per image,
    score, write ``out/detections.json``, ``out/metrics.json`` and the pictures (PR curves, AP per class,
    confusion matrix, samples)."""
    data = read_dataset(spec, classes or predictor.class_names, skip_bad)
    apply_findings(check_splits({"evaluation": data}), skip_bad, "--skip-bad leaves them out", {"evaluation": data})
    if data.class_names != predictor.class_names:
        raise ConfigError(f"the dataset's classes {data.class_names} differ from the model's "
                          f"{predictor.class_names}; pass --classes in the model's order")
    options, note = predictor.backend.evaluation_options(score_threshold)
    detections = list(predictor.predict_data(data, options))
    result = evaluate_detections(detections, data, metric, iou)
    result.set_thresholds(options.score_threshold, predictor.backend.score_threshold, note)
    out = Path(out)
    written = write_coco_results(detections, data.category_ids, out / "detections.json")
    metrics_file = out / "metrics.json"
    write_json(result.to_json(), metrics_file)
    pictures = write_evaluation_pictures(result, detections, data, out)
    return Evaluation(result, detections, written, pictures, metrics_file)
