"""COCO box evaluation through pycocotools: the 12-line summary, per-class AP and the mAP line.

The ground truth is the original annotation file when the data came from COCO JSON, otherwise a COCO
dictionary built from the records (difficult objects become ignore regions). Results are scored exactly as
``COCOeval`` scores the written detections JSON.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.writers import to_coco_dict
from .base import EvalResult, Evaluator, per_class_table
from .thresholds import best_f1, coco_ranked, f1_table

SUMMARY_NAMES = ["mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                 "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]


def coco_ground_truth(data) -> COCO:
    coco = COCO()
    if data.coco_json is not None:
        coco.dataset = json.loads(data.coco_json.read_text())
        for ann in coco.dataset.get("annotations", []):  # optional in a COCO file, required by COCOeval
            ann.setdefault("iscrowd", 0)
            if "area" not in ann and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    else:
        coco.dataset = to_coco_dict(data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> tuple[COCOeval, str]:
    """COCOeval on a results list; returns the evaluator and its printed 12-line summary."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return evaluator, summary.getvalue()


class COCOEvaluator(Evaluator):
    def __init__(self, data):
        super().__init__(data)
        self.gt = coco_ground_truth(data)

    def results(self) -> list[dict]:
        return [entry for det in self.detections for entry in det.to_coco(self.data.category_ids)]

    def evaluate(self) -> EvalResult:
        image_ids = [r.image_id for r in self.data.records]
        evaluator, summary = run_cocoeval(self.gt, self.results(), image_ids)
        metrics = {name: float(v) for name, v in zip(SUMMARY_NAMES, evaluator.stats)}
        per_class, curves, class_aps = class_results(evaluator, self.gt)
        known = [v for v in per_class.values() if not np.isnan(v)]
        f1 = f1_thresholds(evaluator, self.gt)
        report = "\n".join([summary.rstrip(), "", per_class_table(per_class, "AP@[.5:.95]"), "", f1_table(f1),
                            f"mAP@[.5:.95] {metrics['mAP']:.4f}  mAP@0.5 {metrics['mAP50']:.4f}  "
                            f"({len(known)} classes with ground truth, {len(image_ids)} images)"])
        return EvalResult(metrics, per_class, report, curves=curves, class_aps=class_aps, f1_thresholds=f1)


def f1_thresholds(evaluator: COCOeval, gt: COCO) -> dict[str, dict | None]:
    """Class name -> the F1-optimal score threshold at IoU 0.5 (``thresholds.best_f1``), for classes with
    ground truth."""
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        ranked = coco_ranked(evaluator, k, 0.5)
        if ranked is not None:
            out[gt.cats[cat_id]["name"]] = best_f1(*ranked)
    return out


def class_results(evaluator: COCOeval, gt: COCO) -> tuple[dict, dict, dict]:
    """Per-class AP@[.5:.95] (the printed table), and the precision/recall curves at IoU 0.5 and averaged over
    0.5:0.95 with their APs, all read from pycocotools' own ``eval["precision"]`` array [IoU, recall, class,
    area, maxDets] (area "all", 100 detections). COCO's AP is the mean of precision at the 101 recall points
    ``recThrs`` (0, 0.01, .., 1), so each curve's mean is exactly its AP; precision is -1 for a class without
    ground truth (that class gets no curve) and 0 past the highest recall reached."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    recall_points = np.asarray(evaluator.params.recThrs, dtype=np.float64)
    at_50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
    per_class: dict[str, float] = {}
    curves: dict[str, dict] = {"AP@0.5": {}, "AP@[.5:.95]": {}}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        name = gt.cats[cat_id]["name"]
        valid = values[values > -1]
        per_class[name] = float(valid.mean()) if valid.size else float("nan")
        if valid.size == values.size:
            curves["AP@0.5"][name] = (recall_points, values[at_50].astype(np.float64))
            curves["AP@[.5:.95]"][name] = (recall_points, values.mean(axis=0, dtype=np.float64))
    class_aps = {kind: {name: float(p.mean()) for name, (_, p) in by_class.items()} for kind, by_class in curves.items()}
    return per_class, curves, class_aps
