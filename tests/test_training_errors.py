"""Issue 21: a bad image never costs a training run. Named before the first step when the pre-flight check can
see it; met later (damage the check cannot see), the run ends in one line, within seconds, with no worker
process left, and after an optimiser step it leaves a resumable ``last.pt`` and the resume command - the
epoch whose evaluation failed is evaluated first by the resumed run, not trained again.

The old code hung here for ever: a DataError re-raised from a DataLoader worker kept the loader alive past
``main`` (a reference cycle), and at exit multiprocessing SIGTERMed the worker - which ignores SIGTERM - and
waited for it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from detzoo.cli import main
from detzoo.common.config import DatasetSpec, load_config
from detzoo.data.formats import read_dataset
from detzoo.data.loader import TrainBatchSampler
from fast_training import fast_args, load, metrics_rows, start_cli
from test_image_checks import corrupt_png

EXIT_WITHIN_S = 240  # generous for a loaded 2-core machine (the run itself takes seconds); the old code never ended


@pytest.fixture
def shapes_copy(tmp_path, shapes) -> tuple[Path, Path]:
    """A copy of the shapes dataset the test may damage: (train json, val json)."""
    root = shapes[0].parent.parent
    copy = tmp_path / "shapes"
    shutil.copytree(root, copy)
    return copy / "annotations" / shapes[0].name, copy / "annotations" / shapes[1].name


def _image(json_path: Path, index: int) -> Path:
    data = read_dataset(DatasetSpec(str(json_path)))
    return data.records[index].path


def _finish(process: subprocess.Popen) -> tuple[str, str]:
    """The process's output once it has exited; a failure if it is still running after EXIT_WITHIN_S."""
    try:
        return process.communicate(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"still running {EXIT_WITHIN_S} s after the start:\n{out}\n{err}")


def _assert_nothing_left(process: subprocess.Popen) -> None:
    """No process of the run's group (the CLI was its leader; its DataLoader workers were in it) is alive."""
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def test_a_truncated_validation_image_is_named_before_the_first_step(tmp_path, shapes_copy, capsys):
    bad = _image(shapes_copy[1], 2)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    missing_end = _image(shapes_copy[0], 0)
    missing_end.write_bytes(missing_end.read_bytes()[:-2])  # repaired: only its end-of-image marker is gone
    assert main(fast_args(shapes_copy, tmp_path, "run", "train.epochs=1", val=True)) == 2
    out, err = capsys.readouterr()
    assert "warning: repaired 1 truncated JPEG(s)" in out and str(missing_end) in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: 1 image(s) cannot be used (0 of 24 training, 1 of 8 validation); "
                               "data.skip_bad=true leaves them out; `detzoo inspect --data ")
    assert len(lines) == 2 and re.fullmatch(rf"  {re.escape(str(bad))}: cannot decode image \(corrupt or truncated\?\): "
                                            r"truncated JPEG: its data ends \d+ of 128 pixel rows before the bottom "
                                            r"of the stored 128x128 frame \(those rows would be invented grey\)",
                                            lines[1])
    assert not (tmp_path / "run").exists()  # stopped before the run folder, the model, the first step


def test_skip_bad_trains_without_them_and_says_how_many(tmp_path, shapes_copy, capsys):
    bad = _image(shapes_copy[1], 2)
    bad.write_bytes(b"not an image")
    assert main(fast_args(shapes_copy, tmp_path, "run", "train.epochs=1", "data.skip_bad=true", val=True)) == 0
    out = capsys.readouterr().out
    assert "warning: left out 1 image(s) that cannot be used (0 of 24 training, 1 of 8 validation):\n" \
           f"  {bad}: cannot decode image" in out
    assert re.search(r"classes with ground truth, 7 images\)", out)  # evaluated on the other 7


@pytest.mark.slow
def test_damage_only_decoding_shows_ends_the_run_in_one_line_and_keeps_the_epoch(tmp_path, shapes_copy, capsys):
    """A validation image whose header and end are whole but whose data is damaged passes the check and is met
    by a DataLoader worker at the first evaluation, after a whole epoch of training."""
    bad = _image(shapes_copy[1], 3)
    original = bad.read_bytes()
    bad.write_bytes(corrupt_png((128, 128)))  # (Pillow reads a file's format from its content, not its name)
    run = tmp_path / "run"
    process = start_cli(fast_args(shapes_copy, tmp_path, "run", "train.epochs=1", "data.workers=1", val=True))
    out, err = _finish(process)
    assert process.returncode == 2, err
    _assert_nothing_left(process)
    assert "Traceback" not in err and "Caught DataError" not in err
    assert err.strip().splitlines() == [
        f"error: {bad}: cannot decode image (corrupt or truncated?): broken data stream when reading image file",
        f"training stopped by this error at epoch 1, step 6; state saved to {run / 'last.pt'}. Resume, once the "
        "cause is fixed, with:", f"  detzoo train --resume {run}"]
    state = load(run)
    assert (state["epoch"], state["step"]) == (0, 6) and state["finished_epoch_row"]["epoch"] == 1
    assert not (run / "metrics.csv").exists()

    bad.write_bytes(original)  # fixed: the resumed run evaluates the finished epoch instead of training it again
    assert main(["train", "--resume", str(run)]) == 0
    assert f"resumed from {run / 'last.pt'} at epoch 1, step 6" in capsys.readouterr().out
    (row,) = metrics_rows(run)
    assert row["epoch"] == "1" and row["step"] == "6" and float(row["loss"]) > 0 and row["val_mAP"] != ""
    assert load(run)["step"] == 6 and "finished_epoch_row" not in load(run)


@pytest.mark.slow
def test_a_training_image_damaged_inside_is_one_line_after_the_steps_before_it_are_saved(tmp_path, shapes_copy):
    config = load_config("ssd300_mobilenetv2", [f"data.train={shapes_copy[0]}"])
    sampler = TrainBatchSampler(read_dataset(DatasetSpec(str(shapes_copy[0]))), 4, seed=config.train.seed)
    sampler.set_epoch(0)
    second_batch = [index for index, _ in list(sampler)[1]]
    bad = _image(shapes_copy[0], second_batch[2])
    bad.write_bytes(corrupt_png((128, 128)))
    run = tmp_path / "run"
    process = start_cli(fast_args(shapes_copy, tmp_path, "run", "train.epochs=1", "data.workers=1"))
    out, err = _finish(process)
    assert process.returncode == 2, err
    _assert_nothing_left(process)
    assert err.strip().splitlines()[0] == f"error: {bad}: cannot decode image (corrupt or truncated?): broken data " \
                                          "stream when reading image file"
    assert f"state saved to {run / 'last.pt'}" in err and f"  detzoo train --resume {run}" in err
    state = load(run)
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 1, 1)  # the first batch's step is kept


def test_any_error_after_a_step_keeps_the_state_and_notes_the_resume_command(tmp_path, shapes, monkeypatch):
    from detzoo.models.ssd import SSD

    real, calls = SSD.compute_loss, []

    def fails_on_the_third_call(self, images, targets):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected: a bug in the model")
        return real(self, images, targets)

    monkeypatch.setattr(SSD, "compute_loss", fails_on_the_third_call)
    with pytest.raises(RuntimeError, match="injected") as error:  # a bug is not a DetzooError: it keeps its traceback
        main(fast_args(shapes, tmp_path, "run", "train.epochs=1"))
    run = tmp_path / "run"
    assert error.value.__notes__ == [f"training stopped by this error at epoch 1, step 2; state saved to "
                                     f"{run / 'last.pt'}. Resume, once the cause is fixed, with:\n"
                                     f"  detzoo train --resume {run}"]
    assert (load(run)["step"], load(run)["batch_in_epoch"]) == (2, 2)


@pytest.mark.slow
def test_under_torchrun_rank_0_checks_and_every_process_stops_on_its_findings(tmp_path, shapes_copy):
    bad = _image(shapes_copy[1], 2)
    bad.write_bytes(bad.read_bytes()[:200])  # cut inside its headers
    process = start_cli(fast_args(shapes_copy, tmp_path, "ddp", "train.epochs=1", val=True), torchrun_processes=2)
    out, err = _finish(process)
    assert process.returncode != 0
    _assert_nothing_left(process)
    assert out.count("checked 32 image file(s)") == 1  # rank 0 checked; rank 1 acted on the broadcast findings
    for rank in (0, 1):
        assert f"error (rank {rank}): 1 image(s) cannot be used (0 of 24 training, 1 of 8 validation)" in err
    assert f"  {bad}: cannot decode image" in err and not (tmp_path / "ddp").exists()
