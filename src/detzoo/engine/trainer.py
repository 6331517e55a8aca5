"""The training core: a short loop with a handful of hook points (detectron2 style).

``Trainer.fit`` runs epochs of ``train_step`` (autocast forward -> loss -> backward -> one all-reduce ->
clip -> step -> EMA), then the epoch end: evaluation when due, checkpoints (``last.pt``, ``epoch_N.pt``,
``best.pt``), a ``metrics.csv`` row, callbacks (plots, TensorBoard) and one log line. Everything needed to
continue exactly is in ``last.pt``, also when it is written every ``save_every_steps`` inside an epoch.

Under DDP every decision is taken by all processes together, from one small all-reduce per step that
carries the losses of every process and a "stop" flag: a non-finite loss on any process skips the step
everywhere (and aborts after ``max_nonfinite`` in a row), and SIGINT/SIGTERM reaching any process stops all
of them after the same step, with ``last.pt`` saved and the command that resumes printed.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..common.checkpoints import atomic_save, model_payload
from ..common.config import Config
from ..common.device import data_workers
from ..common.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
from ..common.errors import TrainingError
from ..data.loader import Batch
from ..data.records import DetectionData
from ..data.transforms import normalize
from .compiled import compiled_loss
from .ema import ema_state, load_ema_state
from .evaluate import evaluate_model
from .precise_bn import recompute_bn_statistics
from .rng_state import restore_rng_states, rng_states
from .run_folder import MetricsLog
from .signals import StopRequest

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the state was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "ended by this signal"


class Callback:
    """Hook points. ``after_train`` runs when ``fit`` ends, normally or by an exception. A callback with
    state implements state_dict/load_state_dict (saved in checkpoints)."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None: ...

    def after_epoch(self, trainer: Trainer, row: dict) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


class StepModule(nn.Module):
    """``forward(images, targets) -> losses``, so DDP sees the whole training computation. ``compile``: the
    detector's ``compute_loss`` through ``torch.compile`` (``engine/compiled.py``; the detector itself, and
    so its state dict, stays as it is)."""

    def __init__(self, detector: nn.Module, compile: bool = False):
        super().__init__()
        self.detector = detector
        self.compute_loss = compiled_loss(detector.compute_loss) if compile else detector.compute_loss

    def forward(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return self.compute_loss(images, targets)


def autocast(device: torch.device, amp: str):
    """The forward's precision context: ``amp`` is none | fp16 | bf16 (see ``train.check_precision_and_bn``)."""
    dtype = AMP_DTYPES.get(amp)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class Trainer:
    def __init__(self, config: Config, model: nn.Module, step_module: nn.Module, train_loader, sampler,
                 optimizer: torch.optim.Optimizer, scheduler, device: torch.device, run_dir: Path,
                 class_names: list[str], val_data: DetectionData | None = None, dist: DistInfo | None = None,
                 callbacks: list[Callback] | None = None, ema=None):
        self.config = config
        self.cfg = config.train
        self.model = model
        self.step_module = step_module
        self.train_loader = train_loader
        self.sampler = sampler
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.run_dir = Path(run_dir)
        self.class_names = class_names
        self.val_data = val_data
        self.dist = dist or DistInfo()
        self.callbacks = callbacks or []
        self.ema = ema
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cfg.amp == "fp16" and device.type == "cuda")
        self.epoch = 0  # the epoch in progress (0-based)
        self.batch_in_epoch = 0  # batches of that epoch already done
        self.step = 0  # optimiser steps (incl. skipped non-finite ones) since the start
        self.epoch_loss_sums: dict[str, float] = {}  # this epoch's losses so far (saved: exact rows on resume)
        self.epoch_loss_count = 0
        self.best_score: float | None = None
        self.evals_without_improvement = 0
        self.nonfinite_in_row = 0
        self.skipped_samples = 0
        self.stop_request = StopRequest(announce=self.dist.is_main)  # SIGINT/SIGTERM to this process
        self.metrics = MetricsLog(self.run_dir / "metrics.csv")
        self.last_eval = None
        self.last_eval_detections: list = []  # the detections behind last_eval (rank 0), for the pictures

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything needed to continue exactly. Under DDP every process calls it at the same point: the
        random states of all processes are gathered (rank r restores its own)."""
        rng = rng_states()
        state = model_payload(self.model, self.config.to_dict(), self.class_names)
        state.update({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "epoch_losses": {"sums": dict(self.epoch_loss_sums), "count": self.epoch_loss_count},
            "best_score": self.best_score,
            "evals_without_improvement": self.evals_without_improvement,
            "nonfinite_in_row": self.nonfinite_in_row,
            "skipped_samples": self.skipped_samples,
            "rng": rng,
            "rng_per_rank": all_gather_objects(rng) if self.dist.enabled else [rng],
            "callbacks": [c.state_dict() if hasattr(c, "state_dict") else {} for c in self.callbacks],
        })
        if self.ema is not None:
            state.update(ema_state(self.ema))
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        epoch_losses = state.get("epoch_losses", {})
        self.epoch_loss_sums = dict(epoch_losses.get("sums", {}))
        self.epoch_loss_count = epoch_losses.get("count", 0)
        self.best_score = state["best_score"]
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        self.nonfinite_in_row = state.get("nonfinite_in_row", 0)
        self.skipped_samples = state.get("skipped_samples", 0)
        if self.ema is not None:
            load_ema_state(self.ema, state)
        for callback, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            if hasattr(callback, "load_state_dict"):
                callback.load_state_dict(cb_state)
        per_rank = state.get("rng_per_rank") or []
        # another process count than before: every process takes rank 0's states (augmentation does not
        # care: it is seeded per sample)
        restore_rng_states(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"])
        self.metrics.truncate(self.epoch)

    def save(self, *names: str) -> None:
        """Write the state to each named file in the run folder (rank 0). Every process must call it."""
        state = self.state_dict()
        if self.dist.is_main:
            for name in names:
                atomic_save(state, self.run_dir / name)

    # ------------------------------------------------------------------ loop

    def log(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text)

    def fit(self) -> None:
        try:
            with self.stop_request:
                for callback in self.callbacks:
                    callback.before_train(self)
                while self.epoch < self.cfg.epochs and not self._max_steps_reached():
                    row = self._train_epoch()
                    if row is None:  # stopped inside the epoch (max_steps)
                        break
                    if self._end_epoch(row):
                        break
        finally:
            for callback in self.callbacks:
                callback.after_train(self)

    def _max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def set_train_mode(self) -> None:
        """Training mode, except what keeps its statistics: a frozen backbone, and every BatchNorm layer
        with ``train.freeze_bn`` (running statistics used and kept; scale and shift still learn)."""
        self.model.train()
        if self.cfg.freeze == "backbone":
            self.model.backbone.eval()
        if self.cfg.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _train_epoch(self) -> dict | None:
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch)
        self.set_train_mode()
        images_seen, start = 0, time.time()
        total = len(self.sampler)  # batches in the whole epoch; the first batch_in_epoch are skipped
        bar = tqdm(self.train_loader, total=total, initial=self.batch_in_epoch,
                   disable=not (self.dist.is_main and sys.stderr.isatty()),
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", dynamic_ncols=True, leave=False)
        for batch in bar:
            losses, stop = self.train_step(batch)
            self.batch_in_epoch += 1
            self.step += 1
            images_seen += len(batch) * self.dist.world_size
            if losses is not None:
                self.epoch_loss_count += 1
                for key, value in losses.items():
                    self.epoch_loss_sums[key] = self.epoch_loss_sums.get(key, 0.0) + value
                rate = images_seen / max(time.time() - start, 1e-6)
                bar.set_postfix(self._postfix(losses, rate), refresh=False)
            for callback in self.callbacks:
                callback.after_step(self, losses or {})
            if stop:
                bar.close()
                self._stop_for_signal()
            if self.cfg.save_every_steps and self.step % self.cfg.save_every_steps == 0:
                self.save("last.pt")
            if self._max_steps_reached():
                break
        bar.close()
        if self.batch_in_epoch < total:  # stopped inside the epoch (max_steps): keep the exact state
            self.save("last.pt")
            return None
        elapsed = time.time() - start
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({k: v / max(self.epoch_loss_count, 1) for k, v in self.epoch_loss_sums.items()})
        self.epoch_loss_sums, self.epoch_loss_count = {}, 0
        row["images_per_s"] = images_seen / max(elapsed, 1e-6)
        row["epoch_time_s"] = elapsed
        if self.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return row

    def _postfix(self, losses: dict[str, float], rate: float) -> dict:
        postfix = {"loss": f"{losses['loss']:.3f}", "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}",
                   "img/s": f"{rate:.1f}"}
        if self.device.type == "cuda":
            postfix["mem"] = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f}G"
        return postfix

    def train_step(self, batch: Batch) -> tuple[dict[str, float] | None, bool]:
        """One optimiser step. Returns (the losses averaged over all processes, or None when the step was
        skipped because a loss was not finite on some process; whether any process was asked to stop)."""
        self.skipped_samples += batch.skipped
        images = normalize(batch.images.to(self.device, non_blocking=True), self.model.preprocess,
                           batch.image_sizes)  # padding 0, as the model sees it in evaluation
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [{k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in t.items()} for t in batch.targets]
        with autocast(self.device, self.cfg.amp):
            losses = self.step_module(images, targets)
        loss = sum(losses.values())
        self.scaler.scale(loss).backward()  # every process, so DDP's gradient all-reduce always completes
        # The one per-step collective: stop requests and every process's losses, summed.
        shared = torch.stack([torch.tensor(float(self.stop_request.signum is not None), device=self.device),
                              *(v.detach().float() for v in losses.values()), loss.detach().float()])
        stop_votes, *values = all_reduce_sum(shared).tolist()
        names = [*losses, "loss"]
        averaged = {name: value / self.dist.world_size for name, value in zip(names, values)}
        if not all(math.isfinite(v) for v in values):
            self._nonfinite(averaged)
            return None, stop_votes > 0
        self.nonfinite_in_row = 0
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return averaged, stop_votes > 0

    def _nonfinite(self, losses: dict[str, float]) -> None:
        self.nonfinite_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        self.log(f"warning: non-finite loss at step {self.step + 1} ({shown}); step skipped "
                 f"({self.nonfinite_in_row} in a row, train.max_nonfinite={self.cfg.max_nonfinite})")
        if self.nonfinite_in_row >= self.cfg.max_nonfinite:
            last = self.run_dir / "last.pt"
            saved = f"The last checkpoint is {last}" if last.exists() else "No checkpoint was written yet"
            raise TrainingError(
                f"the loss was non-finite for {self.nonfinite_in_row} steps in a row (train.max_nonfinite="
                f"{self.cfg.max_nonfinite}); training stopped at step {self.step + 1}. Lower train.lr, set "
                f"train.grad_clip, or check the data. {saved}.")

    # ------------------------------------------------------------------ epoch end

    def _eval_due(self) -> bool:
        epoch = self.epoch + 1
        return (self.val_data is not None and self.cfg.eval_every > 0 and epoch >= self.cfg.eval_start
                and ((epoch - self.cfg.eval_start) % self.cfg.eval_every == 0 or epoch == self.cfg.epochs))

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated (and has its BN statistics re-estimated): the EMA weights when on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self):
        """The validation result (rank 0; None elsewhere) of ``eval_model``; its detections are kept in
        ``last_eval_detections``."""
        result, self.last_eval_detections = evaluate_model(
            self.eval_model, self.val_data, self.config.eval.metric, self.config.eval.batch_size,
            data_workers(self.config.data.workers), self.device, self.dist, self.config.eval.iou_thresh)
        return result

    def _end_epoch(self, row: dict) -> bool:
        """Evaluate when due, save checkpoints, log. Returns True to stop early."""
        stop = False
        improved = False
        if self.cfg.precise_bn and (self._eval_due() or self.epoch + 1 == self.cfg.epochs):
            recompute_bn_statistics(self.model, self.train_loader.dataset.data, self.cfg.precise_bn,
                                    self.config.eval.batch_size, self.device, 0, self.dist,
                                    target=self.eval_model)
        if self._eval_due():
            result = self.evaluate()
            score = torch.tensor([result.score if result is not None else 0.0], dtype=torch.float64,
                                 device=self.device)
            score = float(all_reduce_sum(score))  # rank 0's score, on every process
            if result is not None:
                self.last_eval = result
                row.update({f"val_{k}": v for k, v in result.metrics.items()})
            improved = self.best_score is None or score > self.best_score
            if improved:
                self.best_score = score
                self.evals_without_improvement = 0
            else:
                self.evals_without_improvement += 1
                stop = 0 < self.cfg.early_stop <= self.evals_without_improvement
        if self.skipped_samples:
            row["skipped_samples"] = self.skipped_samples
        self.epoch += 1
        self.batch_in_epoch = 0
        names = ["last.pt"] + (["best.pt"] if improved else [])
        if self.cfg.checkpoint_every and self.epoch % self.cfg.checkpoint_every == 0:
            names.append(f"epoch_{self.epoch}.pt")
        self.save(*names)
        self._prune_epoch_checkpoints()
        if self.dist.is_main:
            self.metrics.append(row)
        for callback in self.callbacks:
            callback.after_epoch(self, row)
        self.log(self._epoch_line(row, improved))
        if stop:
            self.log(f"early stop: no improvement of val {self._primary_name()} in "
                     f"{self.evals_without_improvement} evaluation(s) (train.early_stop={self.cfg.early_stop}); "
                     f"best {self.best_score:.4f} in {self.run_dir / 'best.pt'}")
        barrier()
        return stop

    def _primary_name(self) -> str:
        return self.last_eval.primary if self.last_eval is not None else "metric"

    def _epoch_line(self, row: dict, improved: bool) -> str:
        losses = " ".join(f"{k} {row[k]:.4f}" for k in row if k.startswith("loss"))
        text = (f"epoch {row['epoch']}/{self.cfg.epochs}  {losses}  lr {row['lr']:.3g}  "
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

    def _prune_epoch_checkpoints(self) -> None:
        if not self.dist.is_main or self.cfg.keep_checkpoints <= 0:
            return
        numbered = sorted(self.run_dir.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in numbered[: -self.cfg.keep_checkpoints]:
            old.unlink()

    # ------------------------------------------------------------------ stop requests

    def _stop_for_signal(self) -> None:
        """Save, say how to resume, stop every process. The message is written before the closing barrier:
        once one process has exited, torchrun may terminate the others."""
        self.save("last.pt")
        signum = self.stop_request.signum or signal.SIGTERM  # another process may have been the one signalled
        how = signal.Signals(signum).name if self.stop_request.signum else "a signal to another process"
        message = (f"training stopped by {how} at epoch {self.epoch + 1}, step {self.step}; state saved to "
                   f"{self.run_dir / 'last.pt'}. Resume with:\n  {resume_command(self.run_dir, self.dist)}")
        if self.dist.is_main:
            tqdm.write(message, file=sys.stderr)
        barrier()
        raise TrainingInterrupted(message, signum)


def resume_command(run_dir: Path, dist: DistInfo) -> str:
    if not dist.enabled:
        return f"detzoo train --resume {run_dir}"
    nodes = dist.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    if nodes > 1:
        return f"torchrun <the same options on each of the {nodes} nodes> -m detzoo train --resume {run_dir}"
    return f"torchrun --nproc_per_node={dist.world_size} -m detzoo train --resume {run_dir}"
