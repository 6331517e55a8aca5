"""Evaluation during training (schedule, metric logged, best.pt by that metric, early stop), the EMA of the
weights (evaluated, saved, preferred by load_model, resumed exactly), frozen BatchNorm, and the feedback
(PNG curves, TensorBoard)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn

from detzoo.cli import main
from detzoo.common.config import load_config
from detzoo.common.distributed import DistInfo
from detzoo.engine import callbacks, trainer
from detzoo.engine.ema import build_ema, ema_decay, ema_state, load_ema_state
from detzoo.engine.train import feedback_callbacks
from detzoo.evaluation import EvalResult
from detzoo.models.weights import load_model
from fast_training import fast_args, load, max_difference, metrics_rows


def test_evaluation_on_schedule_with_curves_and_tensorboard(tmp_path, shapes):
    """3 epochs, evaluated from epoch 2 every 2 epochs, and at the last epoch: epochs 2 and 3."""
    assert main(fast_args(shapes, tmp_path, "run", "train.epochs=3", "train.batch_size=8", "train.eval_start=2",
                          "train.eval_every=2", "model.score_thresh=0.001", val=True)) == 0
    run = tmp_path / "run"
    rows = metrics_rows(run)
    assert [r["val_mAP"] != "" for r in rows] == [False, True, True]
    assert all(0.0 <= float(r["val_mAP"]) <= float(r["val_mAP50"]) <= 1.0 for r in rows[1:])
    assert load(run, "best.pt")["epoch"] in (2, 3)
    for name, size in (("loss.png", (640, 400)), ("lr.png", (640, 400)), ("mAP.png", (640, 400))):
        with Image.open(run / name) as image:
            assert image.format == "PNG" and image.size == size
    if callbacks.tensorboard_available():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        # the losses of each interval, collected every train.log_every_steps (10) and at each epoch's end (3 steps)
        assert [e.step for e in events.Scalars("train/loss")] == [3, 6, 9]
        assert [e.step for e in events.Scalars("val/mAP")] == [6, 9]
        assert events.Scalars("val/mAP")[-1].value == pytest.approx(float(rows[-1]["val_mAP"]), abs=1e-5)
    else:  # the optional extra is missing: training went on without it
        assert not (run / "tensorboard").exists()


def test_without_tensorboard_only_the_plots_are_kept(tmp_path, monkeypatch):
    assert [type(c).__name__ for c in feedback_callbacks(tmp_path, DistInfo(1, 2))] == []  # rank 0 only
    monkeypatch.setattr("detzoo.engine.train.tensorboard_available", lambda: False)
    assert [type(c).__name__ for c in feedback_callbacks(tmp_path, DistInfo())] == ["PlotCurves", "EvalPictures"]


def test_write_plots_skips_missing_and_not_applicable_values(tmp_path):
    rows = [{"epoch": "1", "lr": "0.1", "loss": "2.0", "val_mAP": "", "val_mAP_large": ""},
            {"epoch": "2", "lr": "0.05", "loss": "1.5", "val_mAP": "0.2", "val_mAP_large": "-1"}]
    written = callbacks.write_plots(rows, tmp_path)
    assert [p.name for p in written] == ["loss.png", "lr.png", "mAP.png"]
    first = tmp_path / "first_epoch"
    first.mkdir()
    assert [p.name for p in callbacks.write_plots(rows[:1], first)] == ["loss.png", "lr.png"]  # no mAP yet
    assert not list(tmp_path.glob(".*tmp*"))


def _fingerprint(model: nn.Module) -> float:
    return sum(float(p.double().sum()) for p in model.state_dict().values() if p.is_floating_point())


def test_best_checkpoint_and_early_stop_follow_the_metric_of_the_ema_weights(tmp_path, shapes, monkeypatch,
                                                                          capsys):
    """A stand-in evaluator scores 0.1, 0.3, 0.2, 0.25: best at epoch 2, then two evaluations without
    improvement stop the run after epoch 4 (train.early_stop=2). It also notes which weights it saw."""
    scores, seen = [0.1, 0.3, 0.2, 0.25, 0.9, 0.9], []

    def fake_evaluate(model, data, metric, *args, **kwargs):
        seen.append(_fingerprint(model))
        score = scores[len(seen) - 1]
        return EvalResult({"mAP": score, "mAP50": score}, {}, "fake report"), []

    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluate)
    assert main(fast_args(shapes, tmp_path, "run", "train.epochs=6", "train.batch_size=8", "train.early_stop=2",
                          "train.ema=true", "train.ema_warmup=2", val=True)) == 0
    out = capsys.readouterr().out
    assert "early stop: no improvement of val mAP in 2 evaluation(s) (train.early_stop=2); best 0.3000" in out
    run = tmp_path / "run"
    assert [float(r["val_mAP"]) for r in metrics_rows(run)] == [0.1, 0.3, 0.2, 0.25]
    best, last = load(run, "best.pt"), load(run, "last.pt")
    assert (best["epoch"], best["best_score"], last["epoch"], last["step"]) == (2, 0.3, 4, 12)
    assert best["ema_updates"] == 6
    ema_model = load_model(run / "best.pt").model  # load_model prefers the EMA weights
    assert _fingerprint(ema_model) == pytest.approx(seen[1], rel=1e-9)  # they are what was evaluated
    for key, value in best["ema"].items():
        torch.testing.assert_close(ema_model.state_dict()[key], value)
    assert max_difference(best["ema"], best["model"]) > 1e-4  # ... and not the raw weights


def test_ema_decay_ramps_up_and_continues_exactly_after_a_reload():
    assert ema_decay(0, 0.9, 10) == 0.0 and ema_decay(10, 0.9, 10) == pytest.approx(0.9 * (1 - 1 / math.e))
    assert ema_decay(5, 0.9, 0) == 0.9
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = build_ema(model, decay=0.9, warmup=4)
    expected = model[0].weight.detach().clone()
    for update in range(5):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 1
        ema.update_parameters(model)
        decay = ema_decay(update, 0.9, 4)  # the first update copies (decay 0)
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        torch.testing.assert_close(ema.module[0].weight, expected)
    assert ema.module[1].num_batches_tracked.item() == 5  # integer buffers are copied, not averaged
    clone = build_ema(model, decay=0.9, warmup=4)
    assert load_ema_state(clone, ema_state(ema)) and int(clone.n_averaged) == 5
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update_parameters(model)
    clone.update_parameters(model)
    torch.testing.assert_close(clone.module[0].weight, ema.module[0].weight)
    assert not load_ema_state(clone, {"model": {}})  # a checkpoint without EMA: start from the model


def test_freeze_bn_keeps_batch_norm_in_inference_mode_while_the_rest_trains(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout())
    config = load_config(None, ["train.freeze_bn=true"])
    loop = trainer.Trainer(config, model, model, None, None, None, None, torch.device("cpu"), tmp_path, [])
    loop.set_train_mode()
    assert [m.training for m in model] == [True, False, True, True]
    running_mean = model[1].running_mean.clone()
    model(torch.rand(2, 3, 8, 8))
    assert torch.equal(model[1].running_mean, running_mean)


def test_channels_last_training_follows_the_same_path(tmp_path, shapes):
    """``train.channels_last`` changes the memory layout only: with the weights held (learning rate 0) the losses
    are the same up to float noise. Trained weights are not compared: float32 gradients at initialisation (~100)
    differ by float noise between layouts and a few steps amplify it (both layouts drift from a float64 run
    alike). The checkpoint loads into a default-layout model."""
    for name, flag in (("nchw", "false"), ("nhwc", "true")):
        assert main(fast_args(shapes, tmp_path, name, "train.epochs=1", f"train.channels_last={flag}",
                              "train.lr=0.0")) == 0
    (nchw,), (nhwc,) = metrics_rows(tmp_path / "nchw"), metrics_rows(tmp_path / "nhwc")
    for column in ("loss_box", "loss_cls"):
        assert float(nhwc[column]) == pytest.approx(float(nchw[column]), rel=1e-3), column
    assert max_difference(load(tmp_path / "nchw")["model"], load(tmp_path / "nhwc")["model"]) < 1e-2
    model = load_model(tmp_path / "nhwc" / "last.pt").model
    assert all(p.is_contiguous() for p in model.parameters())
