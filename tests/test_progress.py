"""Progress where no bar is drawn (standard error not a terminal: CI logs, ``make demo > log``): one plain
line every ``train.progress_every_s`` seconds with the epoch, step, losses, speed and time left."""

from __future__ import annotations

import re

from detzoo.cli import main
from detzoo.engine.progress import ProgressLines, duration, progress_line
from fast_training import fast_args


def test_a_line_is_due_every_interval_and_never_when_off():
    clock = [100.0]
    lines = ProgressLines(30.0, clock=lambda: clock[0])
    assert not lines.due()
    clock[0] = 129.9
    assert not lines.due()
    clock[0] = 130.0
    assert lines.due() and not lines.due()  # then the next interval starts
    clock[0] = 159.0
    assert not lines.due()
    clock[0] = 161.0
    assert lines.due()
    off = ProgressLines(0.0, clock=lambda: clock[0])
    clock[0] = 1e9
    assert not off.due()


def test_the_line_says_where_the_epoch_is():
    losses = {"loss_box": 0.81234, "loss_cls": 1.29111, "loss": 2.10345}
    assert progress_line(2, 3, 400, 1000, losses, 0.02, 45.14, 133.0) == (
        "epoch 2/3  step 400/1000  loss 2.1035 (loss_box 0.8123 loss_cls 1.2911)  lr 0.02  45.1 img/s  ETA 2m13s")
    assert progress_line(1, 1, 1, 6, {}, 0.1, 3.0, 20.0) == "epoch 1/1  step 1/6  lr 0.1  3.0 img/s  ETA 20s"
    assert [duration(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path, shapes, capsys):
    """pytest's captured stderr is no terminal, as a CI log is not; a tiny interval makes every step due. The
    losses are collected for the line (a single process may collect at any step)."""
    assert main(fast_args(shapes, tmp_path, "lines", "train.epochs=1", "train.max_steps=3",
                          "train.progress_every_s=0.000001")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1  step")]
    pattern = (r"epoch 1/1  step {}/6  loss \d+\.\d{{4}} \(loss_box \d+\.\d{{4}} loss_cls \d+\.\d{{4}}\)  "
               r"lr \S+  \d+\.\d img/s  ETA \S+")
    assert [bool(re.fullmatch(pattern.format(step), line)) for step, line in enumerate(lines, 1)] == [True] * 3
