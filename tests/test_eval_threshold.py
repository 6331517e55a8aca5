"""Issue 20: every mAP at the evaluation threshold (low, 100 per image) apart from the model's own threshold,
a best.pt that a run of 0.0 evaluations does not leave at epoch 1, the F1-optimal score per class, and the
small-data recipe end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detzoo.cli import main
from detzoo.common.config import DatasetSpec, load_config
from detzoo.common.errors import ConfigError
from detzoo.common.structures import Detections
from detzoo.data.formats import read_dataset
from detzoo.engine import trainer
from detzoo.engine.best import compare, ranking
from detzoo.evaluation import EvalResult, evaluate_detections
from detzoo.evaluation.thresholds import best_f1
from detzoo.models import create_model, list_models
from detzoo.models.registry import model_options
from detzoo.models.selection import (
    EVAL_MAX_DETECTIONS,
    evaluation_options,
    final_evaluation_options,
)
from detzoo.models.ssd import SSD
from detzoo.predict import Predictor
from detzoo.predict.evaluate import evaluate_dataset
from fast_training import fast_args, load, metrics_rows

CLASSES = ["circle", "square", "triangle", "star"]


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_an_evaluation_threshold_apart_from_its_own(name):
    """SSD family: 0.001 (torchvision SSDlite, Ultralytics); Faster R-CNN: torchvision's 0.05; always the COCO
    cap of 100 per image, whatever the model's own settings, which stay as they are."""
    options = {"input_size": 128} if "input_size" in model_options(name) else {}
    model = create_model(name, num_classes=3, **options)
    own = (model.selection.score_thresh, model.selection.detections_per_img)
    chosen = evaluation_options(model.selection)
    assert chosen.score_threshold == (0.001 if isinstance(model, SSD) else 0.05)
    assert chosen.max_detections == EVAL_MAX_DETECTIONS == 100
    assert evaluation_options(model.selection, 0.2).score_threshold == 0.2  # eval.score_thresh / --score
    assert (model.selection.score_thresh, model.selection.detections_per_img) == own


def test_a_file_that_ends_with_nms_is_evaluated_no_lower_than_its_nms_kept():
    baked = {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 300}
    options, note = final_evaluation_options(baked)
    assert (options.score_threshold, options.max_detections, note) == (0.05, 100, "")
    options, note = final_evaluation_options(baked, 0.001)
    assert options.score_threshold == 0.05 and "kept scores >= 0.05" in note


def test_eval_keeps_detections_below_the_deployment_threshold_while_predict_does_not(shapes, tmp_path):
    """Random weights: focal-loss heads start at their prior (sigmoid ~0.01), below the model's 0.05. Predict
    (the model's own threshold, or predict's 0.3) keeps none of those; evaluation keeps them down to 0.001,
    at most 100 per image, and says which thresholds it used."""
    torch.manual_seed(0)
    model = create_model("ssd300_mobilenetv2", num_classes=len(CLASSES), input_size=128)
    predictor = Predictor.from_model(model, CLASSES, batch_size=4)
    spec = DatasetSpec(str(shapes[1]))
    data = read_dataset(spec, CLASSES)
    predicted = list(predictor.predict_data(data))
    assert all(bool((d.scores >= 0.05).all()) for d in predicted)
    evaluation = evaluate_dataset(predictor, spec, tmp_path / "eval")
    scores = torch.cat([d.scores for d in evaluation.detections])
    assert len(evaluation.detections) == len(data) == 8
    assert all(len(d) <= 100 for d in evaluation.detections)
    assert bool((scores >= 0.001).all()) and int((scores < 0.05).sum()) > 0
    assert evaluation.result.thresholds == {"evaluation": 0.001, "model": 0.05}
    assert ("evaluated at score >= 0.001, at most 100 detections per image; the model's own threshold "
            "(predict, serve, export): 0.05") in evaluation.report
    saved = json.loads(evaluation.metrics_file.read_text())
    assert saved["thresholds"] == {"evaluation": 0.001, "model": 0.05}
    assert saved["metrics"]["mAP50"] == pytest.approx(evaluation.metrics["mAP50"])
    assert set(saved["f1_thresholds"]) == set(CLASSES)
    higher = evaluate_dataset(predictor, spec, tmp_path / "eval2", score_threshold=0.05)
    assert all(bool((d.scores >= 0.05).all()) for d in higher.detections)


def test_the_cli_passes_score_to_the_evaluation(trained_checkpoint, coco128_json, tmp_path, capsys):
    assert main(["eval", str(trained_checkpoint), "--data", str(coco128_json), "--score", "0.2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "evaluated at score >= 0.2, at most 100 detections per image" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["thresholds"]["evaluation"] == 0.2


def test_eval_score_thresh_is_checked():
    assert load_config("ssd300_mobilenetv2", ["eval.score_thresh=0.01"]).eval.score_thresh == 0.01
    with pytest.raises(ConfigError, match="eval.score_thresh must be in"):
        load_config("ssd300_mobilenetv2", ["eval.score_thresh=2"])


# ----------------------------------------------------------------------------------------------- best.pt


def test_ties_go_to_mAP50_then_to_the_later_checkpoint():
    first = ranking({"mAP": 0.0, "mAP50": 0.0}, "mAP")
    assert compare(first, []) == (True, True, "best: first evaluation")
    assert compare(ranking({"mAP": 0.0, "mAP50": 0.012}, "mAP"), first) == (
        True, True, "best: mAP 0.0000 = 0.0000, mAP@0.5 0.0120 > 0.0000")
    assert compare(first, first) == (True, False, "best: mAP 0.0000 = 0.0000, mAP@0.5 0.0000 = 0.0000: "
                                                   "the later checkpoint")
    assert compare(ranking({"mAP": 0.1, "mAP50": 0.0}, "mAP"), ranking({"mAP": 0.0, "mAP50": 0.5}, "mAP"))[:2] == (
        True, True)  # the primary metric decides first
    assert compare(ranking({"mAP": 0.1, "mAP50": 0.2}, "mAP"), ranking({"mAP": 0.1, "mAP50": 0.3}, "mAP")) == (
        False, False, "")
    assert ranking({"mAP": 0.3, "mAP_area": 0.2}, "mAP") == (("mAP", 0.3),)  # VOC: the primary alone


def _fake_evaluations(monkeypatch, values: list[tuple[float, float]]):
    def fake_evaluate(model, data, metric, *args, **kwargs):
        mAP, mAP50 = values.pop(0)
        result = EvalResult({"mAP": mAP, "mAP50": mAP50}, {}, "fake report")
        result.set_thresholds(0.001, 0.05)
        return result, []

    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluate)


def test_a_run_whose_every_evaluation_gives_zero_does_not_ship_epoch_one(tmp_path, shapes, monkeypatch, capsys):
    _fake_evaluations(monkeypatch, [(0.0, 0.0)] * 3)
    assert main(fast_args(shapes, tmp_path, "run", "train.epochs=3", "train.batch_size=8", "train.early_stop=5",
                          val=True)) == 0
    run = tmp_path / "run"
    best, last = load(run, "best.pt"), load(run, "last.pt")
    assert best["epoch"] == last["epoch"] == 3
    assert best["best_ranking"] == [["mAP", 0.0], ["mAP50", 0.0]]
    assert last["evals_without_improvement"] == 2  # a tie is not an improvement for train.early_stop
    out = capsys.readouterr().out
    assert out.count("the later checkpoint") == 2
    assert ("evaluated at score >= 0.001, at most 100 detections per image; the model's own threshold (predict, "
            "serve, export): 0.05; best: first evaluation") in out


def test_the_second_key_decides_and_survives_a_resume(tmp_path, shapes, monkeypatch, capsys):
    """mAP 0 throughout; mAP@0.5 0.012 at epoch 2 makes it best, epoch 3's lower mAP@0.5 does not. Resumed
    from epoch 2's last.pt, the ranking in the state gives the same answer."""
    _fake_evaluations(monkeypatch, [(0.0, 0.0), (0.0, 0.012), (0.0, 0.011)])
    assert main(fast_args(shapes, tmp_path, "run", "train.epochs=3", "train.batch_size=8", val=True)) == 0
    run = tmp_path / "run"
    assert load(run, "best.pt")["epoch"] == 2
    assert "best: mAP 0.0000 = 0.0000, mAP@0.5 0.0120 > 0.0000" in capsys.readouterr().out
    assert [float(r["val_mAP50"]) for r in metrics_rows(run)] == [0.0, 0.012, 0.011]

    _fake_evaluations(monkeypatch, [(0.0, 0.0), (0.0, 0.012)])
    assert main(fast_args(shapes, tmp_path, "again", "train.epochs=2", "train.batch_size=8", val=True)) == 0
    _fake_evaluations(monkeypatch, [(0.0, 0.011)])
    assert main(fast_args(shapes, tmp_path, "again", "train.epochs=3", "train.batch_size=8",
                          f"train.resume={tmp_path / 'again'}", val=True)) == 0
    assert load(tmp_path / "again", "best.pt")["epoch"] == 2
    assert load(tmp_path / "again", "last.pt")["best_ranking"] == [["mAP", 0.0], ["mAP50", 0.012]]


# ----------------------------------------------------------------------------------------------- F1


def test_best_f1_picks_the_score_of_the_best_prefix():
    """3 objects; ranked detections hit, hit, miss, hit: F1 after each = 0.5, 0.8, 0.667, 0.857 -> keep all
    four (score 0.2), P 0.75, R 1."""
    scores = np.array([0.9, 0.8, 0.5, 0.2])
    hits = np.cumsum([1, 1, 0, 1])
    best = best_f1(scores, hits / 3, hits / np.arange(1, 5))
    assert best == pytest.approx({"score": 0.2, "f1": 6 / 7, "precision": 0.75, "recall": 1.0})
    assert best_f1(scores, np.zeros(4), np.zeros(4)) is None


@pytest.mark.parametrize("metric", ["coco", "voc07"])
def test_f1_thresholds_separate_true_boxes_from_false_ones(shapes, metric):
    """Every ground-truth box at score 0.9 and a shifted copy of it (IoU < 0.5) at 0.3: the F1-optimal threshold
    of every class is 0.9, with F1 = 1."""
    data = read_dataset(DatasetSpec(str(shapes[1])), CLASSES)
    detections = []
    for record in data.records:
        boxes = torch.from_numpy(record.boxes).float()
        shifted = boxes + (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) * 0.8
        labels = torch.from_numpy(record.labels)
        detections.append(Detections(torch.cat([boxes, shifted]), torch.tensor([0.9] * len(boxes) + [0.3] * len(boxes)),
                                     torch.cat([labels, labels]), CLASSES, record.image_id, str(record.path)))
    result = evaluate_detections(detections, data, metric)
    present = {CLASSES[int(label)] for record in data.records for label in record.labels}
    assert set(result.f1_thresholds) == present
    for best in result.f1_thresholds.values():
        assert best == pytest.approx({"score": 0.9, "f1": 1.0, "precision": 1.0, "recall": 1.0})
    assert "best-F1 score" in result.report


# ----------------------------------------------------------------------------------------------- recipe


def test_the_small_data_recipe_runs_end_to_end(shapes, tmp_path, capsys):
    """configs/small_data.yaml as shipped (lr, batch, warm-up, precise BN, NHWC, evaluation at 0.001) on the
    generated shapes set, 3 epochs, evaluated at the last (train.eval_start=3, as the recipe's first evaluation at
    epoch 10 would be) and, at 0.001 with 100
    boxes per image on objects of 20-50 % of the image, some box matches: mAP@0.5 > 0 (deterministic: seed 0)."""
    config = load_config("small_data")
    assert (config.model.input_size, config.train.batch_size, config.train.lr, config.train.reference_batch,
            config.train.warmup_steps, config.train.eval_every, config.eval.score_thresh) == (
        192, 8, 0.02, 8, 300, 10, None)
    train_json, val_json = shapes
    assert main(["train", "small_data", f"data.train={train_json}", f"data.val={val_json}", "train.epochs=3",
                 "train.eval_start=3", f"train.output={tmp_path}", "train.name=run", "data.workers=0"]) == 0
    rows = metrics_rows(tmp_path / "run")
    assert [r["val_mAP50"] != "" for r in rows] == [False, False, True]
    assert float(rows[-1]["val_mAP50"]) > 0
    assert "evaluated at score >= 0.001" in capsys.readouterr().out
