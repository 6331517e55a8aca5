"""Feedback callbacks (rank 0 only): PNG curves of loss, learning rate and mAP in the run folder, the pictures
of each evaluation in ``<run>/eval/``, and TensorBoard scalars when ``tensorboard`` is installed (``pip install
detzoo[tensorboard]``).

The plots are drawn with matplotlib's object API on the Agg canvas (``common.figures``: no pyplot, so the
process's backend is left alone) and written atomically after every evaluation and when training ends.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..common.figures import new_figure, save_figure
from .pictures import write_evaluation_pictures
from .trainer import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

LOSS_PLOT, LR_PLOT, MAP_PLOT = "loss.png", "lr.png", "mAP.png"
EVAL_FOLDER = "eval"  # the latest evaluation's pictures
AREA_SUFFIXES = ("_small", "_medium", "_large")  # per-size COCO metrics stay in metrics.csv, not the plot


def _series(rows: list[dict], column: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metrics.csv column, skipping epochs without a value."""
    epochs, values = [], []
    for row in rows:
        try:
            value = float(row.get(column, ""))
            epoch = float(row["epoch"])
        except (TypeError, ValueError, KeyError):
            continue
        if math.isfinite(value) and value >= 0:  # COCO writes -1 for "no ground truth of this size"
            epochs.append(epoch)
            values.append(value)
    return epochs, values


def _columns(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    return names


def _plot(rows: list[dict], columns: list[str], title: str, ylabel: str, path: Path, log_y: bool = False) -> bool:
    from matplotlib.ticker import MaxNLocator

    curves = [(c, *_series(rows, c)) for c in columns]
    curves = [(c, x, y) for c, x, y in curves if x]
    if not curves:
        return False
    figure = new_figure(6.4, 4.0, layout="tight")
    axes = figure.add_subplot()
    for name, epochs, values in curves:
        axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=name)
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    if log_y and all(v > 0 for _, _, ys in curves for v in ys):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    save_figure(figure, path)
    return True


def write_plots(rows: list[dict], folder: Path) -> list[Path]:
    """``loss.png`` (every loss column), ``lr.png`` and ``mAP.png`` (the val_*AP* columns) from the rows
    of ``metrics.csv``; returns the files written (mAP.png only once an evaluation has run)."""
    folder = Path(folder)
    columns = _columns(rows)
    written = []
    plans = [([c for c in columns if c.startswith("loss")], "training loss (epoch mean)", "loss", LOSS_PLOT, True),
             (["lr"] if "lr" in columns else [], "learning rate (end of epoch)", "lr", LR_PLOT, False),
             ([c for c in columns if c.startswith("val_") and "AP" in c and not c.endswith(AREA_SUFFIXES)],
              "validation", "AP", MAP_PLOT, False)]
    for names, title, ylabel, filename, log_y in plans:
        if names and _plot(rows, names, title, ylabel, folder / filename, log_y):
            written.append(folder / filename)
    return written


class PlotCurves(Callback):
    """Redraw the curves after each evaluation and when training ends."""

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        if any(key.startswith("val_") for key in row):
            write_plots(trainer.metrics.rows, trainer.run_dir)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.metrics.rows:
            write_plots(trainer.metrics.rows, trainer.run_dir)


class EvalPictures(Callback):
    """After each evaluation: precision/recall curves, AP per class, confusion matrix and validation samples of
    that evaluation in ``<run>/eval/`` (replaced by the next evaluation's; the title names the epoch)."""

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        if trainer.last_eval is not None and any(key.startswith("val_") for key in row):
            write_evaluation_pictures(trainer.last_eval, trainer.last_eval_detections, trainer.val_data,
                                      trainer.run_dir / EVAL_FOLDER, title=f"epoch {row['epoch']}")


def tensorboard_available() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the optional `tensorboard` package)
    except ImportError:
        return False
    return True


class TensorBoardLogger(Callback):
    """Losses (means over each ``train.log_every_steps`` interval) and learning rate, per-epoch rows (validation metrics under ``val/``), written to
    ``<run>/tensorboard``. After a resume, events past the resume step are purged, so curves do not fork."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.writer = None

    def before_train(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # events after the step resumed from are those of the lost steps: purge them
        self.writer = SummaryWriter(str(self.folder), purge_step=trainer.step + 1 if trainer.step > 0 else None)

    def after_interval(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """The mean losses of the steps just collected (every ``train.log_every_steps`` steps), at the step
        reached."""
        for key, value in losses.items():
            self.writer.add_scalar(f"train/{key}", value, trainer.step)
        self.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        for key, value in row.items():
            if key in ("epoch", "step") or not isinstance(value, (int, float)):
                continue
            tag = f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"epoch/{key}"
            self.writer.add_scalar(tag, value, trainer.step)
        self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
