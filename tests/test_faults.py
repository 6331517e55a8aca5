"""Nothing lost on interruption: SIGTERM (finish the step, save, resume command), SIGKILL (resume from the
last periodic checkpoint), a crash in the middle of a checkpoint write, and non-finite losses. Each
interrupted run is resumed and must end where an uninterrupted run with the same seed ends: same weights,
same EMA, same per-epoch losses (tolerance: float noise only)."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from detzoo.cli import main
from detzoo.common.checkpoints import load_checkpoint
from detzoo.models import create_model
from fast_training import fast_args, load, max_difference, metrics_rows, start_cli, wait_for

EPOCHS = 3  # x 6 steps of 4 images
STEPS = 18
SETTINGS = [f"train.epochs={EPOCHS}", "train.ema=true", "train.ema_warmup=4", "train.amp=bf16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("fault_runs")


@pytest.fixture(scope="module")
def reference(runs, shapes):
    """The uninterrupted run every interrupted one is compared with."""
    assert main(fast_args(shapes, runs, "reference", *SETTINGS)) == 0
    return runs / "reference"


def assert_ends_like_reference(run, reference) -> None:
    a, b = load(reference), load(run)
    assert (b["epoch"], b["step"]) == (a["epoch"], a["step"]) == (EPOCHS, STEPS)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=1e-4, atol=1e-5, msg=f"{part} {key}")
    assert b["ema_updates"] == a["ema_updates"] == STEPS
    rows_a, rows_b = metrics_rows(reference), metrics_rows(run)
    assert [r["epoch"] for r in rows_b] == [r["epoch"] for r in rows_a] == ["1", "2", "3"]
    for row_a, row_b in zip(rows_a, rows_b):
        for column in ("loss", "loss_box", "loss_cls", "lr"):
            assert float(row_b[column]) == pytest.approx(float(row_a[column]), rel=1e-4), column
    assert not [p for p in run.iterdir() if ".tmp-" in p.name], "temporary checkpoint files left behind"


def test_the_reference_run_moves_the_weights_far_beyond_the_tolerance(reference):
    """So that "ends like the reference" below means something."""
    torch.manual_seed(0)  # the run's seed: the same initial weights
    initial = create_model("ssd300_mobilenetv2", num_classes=4, input_size=128).state_dict()
    state = load(reference)
    assert max_difference(initial, state["model"]) > 1e-2
    assert max_difference(state["model"], state["ema"]) > 1e-3  # the EMA is an average, not a copy


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(runs, shapes, reference, capsys):
    """SIGTERM to the whole process group, as SLURM sends it (a terminal's Ctrl-C does the same with
    SIGINT): the DataLoader worker must leave it to the trainer. One worker here, none in the reference:
    the result does not depend on the worker count."""
    run = runs / "sigterm"
    process = start_cli(fast_args(shapes, runs, "sigterm", *SETTINGS, "data.workers=1", "train.save_every_steps=4"))
    wait_for(lambda: (run / "last.pt").exists(), process, "step 4 (mid-epoch, the worker busy)")
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: finishing the current step, then saving" in err
    assert "training stopped by SIGTERM" in err and f"Resume with:\n  detzoo train --resume {run}" in err
    state = load(run)
    assert 4 < state["step"] < STEPS  # after the step running when the signal came, long before the end
    assert state["step"] == state["epoch"] * (STEPS // EPOCHS) + state["batch_in_epoch"]
    assert main(["train", "--resume", str(run)]) == 0
    assert f"resumed from {run / 'last.pt'}" in capsys.readouterr().out
    assert_ends_like_reference(run, reference)


def test_sigkill_loses_at_most_the_steps_since_the_last_periodic_checkpoint(runs, shapes, reference):
    run = runs / "sigkill"
    process = start_cli(fast_args(shapes, runs, "sigkill", *SETTINGS, "train.save_every_steps=3"))
    wait_for(lambda: (run / "last.pt").exists(), process, "the first checkpoint (step 3)")
    first = (run / "last.pt").stat().st_ino
    wait_for(lambda: (run / "last.pt").stat().st_ino != first, process, "the second checkpoint (step 6)")
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    state = load_checkpoint(run)  # whatever the moment of the kill, last.pt is a whole checkpoint
    assert state["step"] % 3 == 0 and 6 <= state["step"] < STEPS
    assert main(["train", "--resume", str(run)]) == 0
    assert_ends_like_reference(run, reference)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(runs, shapes, reference, monkeypatch):
    """torch.save dies half-way through its third write (step 8): last.pt must still be step 6's."""
    run = runs / "crash"
    real_save, calls = torch.save, []

    def save_then_crash(obj, handle, *args, **kwargs):
        calls.append(obj["step"])
        if len(calls) == 3:
            handle.write(b"PK\x03\x04 half a checkpoint")
            raise OSError("injected: disk full")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr("detzoo.common.checkpoints.torch.save", save_then_crash)
    with pytest.raises(OSError, match="injected"):
        main(fast_args(shapes, runs, "crash", *SETTINGS, "train.save_every_steps=4"))
    monkeypatch.undo()
    assert calls == [4, 6, 8]  # every 4 steps, and at the end of epoch 1
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt" or ".tmp-" in p.name) == ["last.pt"]
    assert load_checkpoint(run)["step"] == 6
    assert main(["train", "--resume", str(run)]) == 0
    assert_ends_like_reference(run, reference)


@pytest.fixture
def nan_losses(monkeypatch):
    """Make the loss NaN on chosen calls (1-based) of the model's compute_loss."""
    from detzoo.models.ssd import SSD

    real, calls, bad = SSD.compute_loss, [0], set()

    def compute_loss(self, images, targets):
        losses = real(self, images, targets)
        calls[0] += 1
        if calls[0] in bad:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    monkeypatch.setattr(SSD, "compute_loss", compute_loss)
    return bad


def test_nonfinite_losses_skip_their_steps(runs, shapes, nan_losses, capsys):
    nan_losses.update({2, 3})
    assert main(fast_args(shapes, runs, "nan_skip", "train.epochs=1", "train.max_nonfinite=3")) == 0
    out = capsys.readouterr().out
    assert "warning: non-finite loss at step 2 (loss_box=" in out and "loss_cls=nan" in out
    assert "step skipped (2 in a row, train.max_nonfinite=3)" in out
    state = load(runs / "nan_skip")
    assert state["step"] == 6 and state["nonfinite_in_row"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    momentum = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    assert momentum and all(torch.isfinite(m).all() for m in momentum)
    assert math.isfinite(float(metrics_rows(runs / "nan_skip")[0]["loss"]))  # mean of the good steps


def test_nonfinite_losses_in_a_row_abort_with_a_clear_message(runs, shapes, nan_losses, capsys):
    nan_losses.update(range(3, 100))
    code = main(fast_args(shapes, runs, "nan_abort", "train.epochs=1", "train.max_nonfinite=3",
                          "train.save_every_steps=1"))
    assert code == 2
    err = capsys.readouterr().err
    assert "error: the loss was non-finite for 3 steps in a row (train.max_nonfinite=3); training stopped " \
           "at step 5" in err
    assert f"The last checkpoint is {runs / 'nan_abort' / 'last.pt'}" in err
    assert load(runs / "nan_abort")["step"] == 4  # steps 3 and 4 were skipped (and counted), 5 aborted
    assert not os.path.exists(runs / "nan_abort" / "metrics.csv")


def test_a_repeated_signal_is_the_same_request_unless_it_comes_later(monkeypatch):
    from detzoo.engine import signals

    clock = [100.0]
    monkeypatch.setattr(signals.time, "monotonic", lambda: clock[0])
    previous = signal.getsignal(signal.SIGINT)
    with signals.StopRequest(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)  # ... and torchrun forwarding it, a moment later
        assert stop.signum == signal.SIGINT
        clock[0] += signals.REPEATED_SIGNAL_S + 1
        with pytest.raises(KeyboardInterrupt):  # asked again, later: stop at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
