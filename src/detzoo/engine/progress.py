"""What a training step leaves for the host, and the progress a user sees.

``StepLog`` keeps each step's values (every process's losses summed, the stop votes, the gradient norm) on
the device and brings all of them to the host in one copy when the trainer asks (every
``train.log_every_steps`` steps, before a checkpoint, at the end of an epoch): the one place the training
loop waits for the device.

``ProgressLines``: where no progress bar is drawn (standard error not a terminal: CI logs, ``make demo >
log``, a SLURM log), one plain line every ``train.progress_every_s`` seconds says how far the epoch is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class StepRecord:
    step: int  # 1-based optimiser step
    stop_votes: float  # processes asked to stop (SIGINT/SIGTERM) by the time of this step
    losses: dict[str, float]  # averaged over processes
    gradient_norm: float  # of the (unscaled) gradients, after DDP's average


class StepLog:
    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self.pending: list[tuple[int, list[str], torch.Tensor]] = []

    def add(self, step: int, names: list[str], shared: torch.Tensor, gradient_norm: torch.Tensor) -> None:
        """``shared`` = [stop votes, losses in ``names`` order] summed over processes, on the device."""
        self.pending.append((step, names, torch.cat([shared.float(), gradient_norm.detach().float().view(1)])))

    def pull(self) -> list[StepRecord]:
        """The steps since the last pull, in order (one device-to-host copy)."""
        if not self.pending:
            return []
        values = torch.stack([v for _, _, v in self.pending]).tolist()
        records = [StepRecord(step, row[0], {n: v / self.world_size for n, v in zip(names, row[1:-1])}, row[-1])
                   for (step, names, _), row in zip(self.pending, values)]
        self.pending.clear()
        return records


def duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def progress_line(epoch: int, epochs: int, batch: int, batches: int, losses: dict[str, float], lr: float,
                  images_per_s: float, eta_s: float) -> str:
    """``epoch 2/3  step 400/1000  loss 2.1034 (loss_box 0.8123 loss_cls 1.2911)  lr 0.02  45.1 img/s  ETA 2m13s``"""
    text = f"epoch {epoch}/{epochs}  step {batch}/{batches}"
    if "loss" in losses:
        parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items() if k != "loss")
        text += f"  loss {losses['loss']:.4f}" + (f" ({parts})" if parts else "")
    eta = duration(eta_s) if math.isfinite(eta_s) else "?"
    return f"{text}  lr {lr:.3g}  {images_per_s:.1f} img/s  ETA {eta}"


def bar_postfix(losses: dict[str, float], lr: float, images_per_s: float, device: torch.device) -> dict:
    """The progress bar's figures: loss, lr, speed and, on CUDA, peak memory."""
    postfix = {"loss": f"{losses['loss']:.3f}", "lr": f"{lr:.2e}", "img/s": f"{images_per_s:.1f}"}
    if device.type == "cuda":
        postfix["mem"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}G"
    return postfix


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    """The line logged at the end of each epoch, from its ``metrics.csv`` row."""
    losses = " ".join(f"{k} {row[k]:.4f}" for k in row if k.startswith("loss"))
    text = (f"epoch {row['epoch']}/{epochs}  {losses}  lr {row['lr']:.3g}  "
            f"{row['images_per_s']:.1f} img/s  {row['epoch_time_s']:.0f}s")
    if "gpu_mem_gb" in row:
        text += f"  gpu mem {row['gpu_mem_gb']:.1f}G"
    if "val_mAP" in row:
        text += f"  val mAP {row['val_mAP']:.4f}" + (" (best)" if improved else "")
    if "val_mAP50" in row:
        text += f"  mAP@0.5 {row['val_mAP50']:.4f}"
    if row.get("skipped_samples"):
        text += f"  skipped samples {row['skipped_samples']}"
    return text


class ProgressLines:
    """Says when the next plain progress line is due: ``every_s`` seconds after the previous one (or after
    ``start``); ``every_s`` <= 0 never."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self.last = clock()

    def start(self) -> None:
        self.last = self.clock()

    def due(self) -> bool:
        if self.every_s <= 0 or self.clock() - self.last < self.every_s:
            return False
        self.last = self.clock()
        return True
