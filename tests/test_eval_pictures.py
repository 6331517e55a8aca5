"""Evaluation pictures: the curves are the evaluators' own (their area is the printed AP), the confusion matrix
counts what it should, and `detzoo eval` and evaluation during training write valid PNGs."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.common.structures import Detections
from detzoo.data.formats import read_dataset
from detzoo.data.records import DetectionData, make_record
from detzoo.engine.pictures import write_evaluation_pictures
from detzoo.evaluation import evaluate_detections
from detzoo.evaluation.confusion import confusion_matrix
from detzoo.evaluation.plots import CLASS_AP, CONFUSION, PR_CURVES, SAMPLES
from fast_training import fast_args

PICTURES = [PR_CURVES, CLASS_AP, CONFUSION, SAMPLES]


def _noisy_detections(data: DetectionData, seed: int = 0) -> list[Detections]:
    """Per object a detection with jittered corners (some fall below IoU 0.5, many below 0.95), some with the
    wrong class, plus false positives: curves well away from 0 and 1, so the areas say something."""
    rng = np.random.default_rng(seed)
    out = []
    for record in data.records:
        sides = np.repeat(record.boxes[:, 2:] - record.boxes[:, :2], 2, axis=0).reshape(-1, 4)
        boxes = record.boxes + rng.normal(0, 0.12, record.boxes.shape) * sides
        labels = np.where(rng.random(len(boxes)) < 0.15, rng.integers(0, len(data.class_names), len(boxes)),
                          record.labels)
        extra = rng.integers(0, 3)
        corner = rng.uniform(0, 0.6, (extra, 2)) * [record.width, record.height]
        fake = np.concatenate([corner, corner + rng.uniform(10, 40, (extra, 2))], axis=1)
        boxes = np.concatenate([boxes, fake])
        labels = np.concatenate([labels, rng.integers(0, len(data.class_names), extra)])
        scores = rng.uniform(0.05, 1.0, len(boxes))
        out.append(Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                              torch.tensor(labels, dtype=torch.int64), data.class_names, record.image_id,
                              str(record.path)))
    return out


def _printed_ap(report: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)}\s+([0-9.]+)$", report, re.MULTILINE).group(1))


def test_coco_curve_area_is_the_printed_ap(shapes):
    """COCO's AP is the mean of precision at 101 recall points 0, 0.01, .., 1; the drawn curve joins those
    points, and its trapezoid area differs from that mean by at most 0.01: with h = 0.01, trapz = h (sum p -
    (p0 + p100) / 2) and mean = sum p / 101, so trapz - mean = sum p / 10100 - (p0 + p100) / 200, each term in
    [0, 0.01] for precision in [0, 1]. The printed table rounds to 3 decimals (+ 0.0005)."""
    data = read_dataset(DatasetSpec(path=str(shapes[1])))
    result = evaluate_detections(_noisy_detections(data), data, "coco")
    assert set(result.curves) == {"AP@0.5", "AP@[.5:.95]"}
    for name, (recall, precision) in result.curves["AP@[.5:.95]"].items():
        printed = _printed_ap(result.report, name)
        assert 0.05 < printed < 0.95  # a curve with something to measure
        assert np.trapezoid(precision, recall) == pytest.approx(printed, abs=0.01 + 0.0005)
        assert precision.mean() == pytest.approx(result.per_class[name], abs=1e-12)  # the same numbers
    mean50 = np.mean([p.mean() for _, p in result.curves["AP@0.5"].values()])
    assert mean50 == pytest.approx(result.metrics["mAP50"], abs=1e-12)
    assert f"mAP@0.5 {mean50:.4f}" in result.report


@pytest.mark.parametrize("metric", ["voc07", "voc07_area"])
def test_voc_curve_area_is_the_printed_ap(shapes, metric):
    """The VOC curve is the precision envelope the area AP integrates: drawn as steps, its area is the area
    AP exactly (printed to 3 decimals), and its mean at recall 0, 0.1, .., 1 is the 11-point AP."""
    data = read_dataset(DatasetSpec(path=str(shapes[1])))
    result = evaluate_detections(_noisy_detections(data, seed=1), data, metric)
    (kind,) = result.curves
    assert kind == "AP@0.5 (area)"
    for name, (recall, precision) in result.curves[kind].items():
        area = float(np.sum(np.diff(recall) * precision[1:]))  # steps: precision[i] on (recall[i-1], recall[i]]
        eleven = np.mean([precision[np.searchsorted(recall, t, side="left")] for t in np.linspace(0, 1, 11)])
        assert area == pytest.approx(result.class_aps["AP@0.5 (area)"][name], abs=1e-12)
        assert eleven == pytest.approx(result.class_aps["AP@0.5 (11-point)"][name], abs=1e-12)
        printed = _printed_ap(result.report, name)
        assert printed == pytest.approx(area if metric == "voc07_area" else eleven, abs=0.0005)


def test_confusion_matrix_counts(tmp_path):
    """Classes a, b. Ground truth: a at A, b at B, a crowd region at C. Detections: b on A (a seen as b), a far
    from everything (background), a on C (ignored: crowd), b on B below the score threshold (B is missed)."""
    A, B, C, far = [0, 0, 20, 20], [40, 40, 60, 60], [0, 60, 30, 90], [70, 0, 90, 20]
    record = make_record(tmp_path / "x.jpg", 100, 100, [A, B, C], [0, 1, 0], "x", 1, iscrowd=[False, False, True])
    data = DetectionData([record], ["a", "b"], "test", "coco")
    det = Detections(torch.tensor([A, far, C, B], dtype=torch.float32), torch.tensor([0.9, 0.8, 0.7, 0.1]),
                     torch.tensor([1, 0, 0, 1]), ["a", "b"], 1)
    matrix = confusion_matrix([det], data, score=0.3, iou=0.5)
    expected = np.array([[0, 1, 0],   # a: detected as b once
                         [0, 0, 1],   # b: missed
                         [1, 0, 0]])  # background: one a detection on nothing
    np.testing.assert_array_equal(matrix, expected)


def _assert_pictures(folder):
    for name in PICTURES:
        with Image.open(folder / name) as image:
            image.verify()
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 200


def test_pictures_from_eval_and_from_training(shapes, tmp_path, capsys):
    assert main(fast_args(shapes, tmp_path, "run", "train.epochs=1", val=True)) == 0
    run = tmp_path / "run"
    _assert_pictures(run / "eval")  # written by the evaluation at the end of epoch 1
    for metric in ("coco", "voc07"):
        out = tmp_path / f"eval_{metric}"
        assert main(["eval", str(run / "last.pt"), "--data", str(shapes[1]), "--metric", metric, "--out", str(out),
                     "--workers", "0"]) == 0
        assert f"pictures: {out / PR_CURVES}" in capsys.readouterr().out
        _assert_pictures(out)


def test_pictures_of_a_result_without_detections(shapes, tmp_path):
    """A result whose detections are not at hand (e.g. a stand-in evaluator) still gets its charts."""
    data = read_dataset(DatasetSpec(path=str(shapes[1])))
    result = evaluate_detections(_noisy_detections(data), data, "coco")
    written = write_evaluation_pictures(result, [], data, tmp_path)
    assert [p.name for p in written] == [PR_CURVES, CLASS_AP]
