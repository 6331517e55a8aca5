"""The training core: a short loop with a handful of hook points (detectron2 style).

``Trainer.fit`` runs epochs of ``train_step`` (autocast forward -> loss -> backward -> clip -> step), then the
epoch end: evaluation when due, checkpoints (``last.pt``, ``epoch_N.pt``, ``best.pt``), one log line and a
``metrics.csv`` row. Everything needed to continue exactly is in ``last.pt``.

Faults: a non-finite loss skips its step (all processes agree) and aborts after ``max_nonfinite`` in a row;
SIGINT/SIGTERM finish the current step, save ``last.pt`` and stop with the command that resumes.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..data.loader import Batch
from ..data.records import DetectionData
from ..data.transforms import normalize
from .checkpoint import atomic_save, model_payload, restore_rng_states, rng_states
from .distributed import DistInfo, all_reduce_sum, barrier
from .evaluate import evaluate_model
from .precise_bn import recompute_bn_statistics
from .run_folder import MetricsLog


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the state was saved; the message says how to resume."""


class Callback:
    """Hook points. A callback with state implements state_dict/load_state_dict (saved in checkpoints)."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None: ...

    def after_epoch(self, trainer: Trainer, row: dict) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


class StepModule(nn.Module):
    """``forward(images, targets) -> losses``, so DDP sees the whole training computation."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return self.detector.compute_loss(images, targets)


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
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cfg.amp == "fp16" and device.type == "cuda")
        self.epoch = 0  # the epoch in progress (0-based)
        self.batch_in_epoch = 0  # batches of that epoch already done
        self.step = 0  # optimiser steps (incl. skipped non-finite ones) since the start
        self.best_score: float | None = None
        self.evals_without_improvement = 0
        self.nonfinite_in_row = 0
        self.skipped_samples = 0
        self.stop_signal: int | None = None
        self.metrics = MetricsLog(self.run_dir / "metrics.csv")
        self.last_eval = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        state = model_payload(self.model, self.config.to_dict(), self.class_names)
        state.update({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_score": self.best_score,
            "evals_without_improvement": self.evals_without_improvement,
            "rng": rng_states(),
            "callbacks": [c.state_dict() if hasattr(c, "state_dict") else {} for c in self.callbacks],
        })
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best_score = state["best_score"]
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        for callback, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            if hasattr(callback, "load_state_dict"):
                callback.load_state_dict(cb_state)
        restore_rng_states(state["rng"])
        self.metrics.truncate(self.epoch)

    def save(self, name: str = "last.pt", state: dict | None = None) -> None:
        if self.dist.is_main:
            atomic_save(state if state is not None else self.state_dict(), self.run_dir / name)

    # ------------------------------------------------------------------ loop

    def log(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text)

    def fit(self) -> None:
        previous = self._install_signal_handlers()
        try:
            for callback in self.callbacks:
                callback.before_train(self)
            while self.epoch < self.cfg.epochs and not self._max_steps_reached():
                row = self._train_epoch()
                if row is None:  # stopped inside the epoch (max_steps)
                    break
                if self._end_epoch(row):
                    break
            for callback in self.callbacks:
                callback.after_train(self)
        finally:
            self._restore_signal_handlers(previous)

    def _max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _train_epoch(self) -> dict | None:
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch)
        self.model.train()
        if self.cfg.freeze == "backbone":
            self.model.backbone.eval()  # frozen BN statistics too
        sums: dict[str, float] = defaultdict(float)
        count, images_seen, start = 0, 0, time.time()
        total = len(self.sampler)  # batches in the whole epoch; the first batch_in_epoch are skipped
        bar = tqdm(self.train_loader, total=total, initial=self.batch_in_epoch,
                   disable=not (self.dist.is_main and sys.stderr.isatty()),
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", dynamic_ncols=True, leave=False)
        for batch in bar:
            losses = self.train_step(batch)
            self.batch_in_epoch += 1
            self.step += 1
            images_seen += len(batch) * self.dist.world_size
            if losses is not None:
                count += 1
                for key, value in losses.items():
                    sums[key] += value
                rate = images_seen / max(time.time() - start, 1e-6)
                bar.set_postfix(self._postfix(losses, rate), refresh=False)
            for callback in self.callbacks:
                callback.after_step(self, losses or {})
            if self.cfg.save_every_steps and self.step % self.cfg.save_every_steps == 0:
                self.save()
            if self.stop_signal is not None:
                self._stop_for_signal()
            if self._max_steps_reached():
                break
        bar.close()
        if self.batch_in_epoch < total:  # stopped inside the epoch (max_steps): keep the exact state
            self.save()
            return None
        elapsed = time.time() - start
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({k: v / max(count, 1) for k, v in sums.items()})
        row["images_per_s"] = images_seen / max(elapsed, 1e-6)
        row["epoch_time_s"] = elapsed
        return row

    def _postfix(self, losses: dict[str, float], rate: float) -> dict:
        postfix = {"loss": f"{losses['loss']:.3f}", "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}",
                   "img/s": f"{rate:.1f}"}
        if self.device.type == "cuda":
            postfix["mem"] = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.1f}G"
        return postfix

    def train_step(self, batch: Batch) -> dict[str, float] | None:
        """One optimiser step; returns the losses as floats, or None when the step was skipped."""
        self.skipped_samples += batch.skipped
        images = normalize(batch.images.to(self.device, non_blocking=True), self.model.preprocess)
        targets = [{k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in t.items()} for t in batch.targets]
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = self.step_module(images, targets)
        loss = sum(losses.values())
        finite = all_reduce_sum(torch.tensor([float(torch.isfinite(loss))], device=self.device))
        if finite.item() < self.dist.world_size:
            self._nonfinite(losses)
            return None
        self.nonfinite_in_row = 0
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["loss"] = float(loss.detach())
        return out

    def _nonfinite(self, losses: dict[str, torch.Tensor]) -> None:
        self.nonfinite_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
        self.log(f"warning: non-finite loss at step {self.step + 1} ({shown}); step skipped "
                 f"({self.nonfinite_in_row} in a row)")
        if self.nonfinite_in_row >= self.cfg.max_nonfinite:
            raise TrainingError(
                f"the loss was non-finite for {self.nonfinite_in_row} steps in a row (train.max_nonfinite); "
                f"training stopped at step {self.step + 1}. Lower train.lr, set train.grad_clip, or check the "
                f"data. The last good state is {self.run_dir / 'last.pt'}")

    # ------------------------------------------------------------------ epoch end

    def _eval_due(self) -> bool:
        epoch = self.epoch + 1
        return (self.val_data is not None and self.cfg.eval_every > 0 and epoch >= self.cfg.eval_start
                and ((epoch - self.cfg.eval_start) % self.cfg.eval_every == 0 or epoch == self.cfg.epochs))

    def evaluate(self):
        model = self.ema.module if self.ema is not None else self.model
        result, _ = evaluate_model(model, self.val_data, self.config.eval.metric, self.config.eval.batch_size,
                                   self.config.data.workers, self.device, self.dist, self.config.eval.iou_thresh)
        return result

    def _end_epoch(self, row: dict) -> bool:
        """Evaluate when due, save checkpoints, log. Returns True to stop early."""
        stop = False
        improved = False
        if self.cfg.precise_bn and (self._eval_due() or self.epoch + 1 == self.cfg.epochs):
            recompute_bn_statistics(self.model, self.train_loader.dataset.data, self.cfg.precise_bn,
                                    self.config.eval.batch_size, self.device, 0, self.dist)
        if self._eval_due():
            result = self.evaluate()
            score = torch.tensor([result.score if result is not None else 0.0], device=self.device)
            score = float(all_reduce_sum(score)) if self.dist.enabled else float(score)
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
        state = self.state_dict()
        self.save("last.pt", state)
        if improved:
            self.save("best.pt", state)
        if self.cfg.checkpoint_every and self.epoch % self.cfg.checkpoint_every == 0:
            self.save(f"epoch_{self.epoch}.pt", state)
            self._prune_epoch_checkpoints()
        for callback in self.callbacks:
            callback.after_epoch(self, row)
        if self.dist.is_main:
            self.metrics.append(row)
        self.log(self._epoch_line(row, improved))
        if stop:
            self.log(f"early stop: no improvement in {self.evals_without_improvement} evaluations")
        barrier()
        return stop

    def _epoch_line(self, row: dict, improved: bool) -> str:
        losses = " ".join(f"{k} {row[k]:.4f}" for k in row if k.startswith("loss"))
        text = (f"epoch {row['epoch']}/{self.cfg.epochs}  {losses}  lr {row['lr']:.3g}  "
                f"{row['images_per_s']:.1f} img/s  {row['epoch_time_s']:.0f}s")
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

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum, frame):
            if self.stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum
            self.log(f"\n{signal.Signals(signum).name} received: finishing the current step, then saving")

        return {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def _restore_signal_handlers(self, previous) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)

    def _stop_for_signal(self) -> None:
        self.save()
        barrier()
        raise TrainingInterrupted(
            f"training stopped by {signal.Signals(self.stop_signal).name} at epoch {self.epoch + 1}, step "
            f"{self.step}; state saved to {self.run_dir / 'last.pt'}. Resume with:\n"
            f"  detzoo train --resume {self.run_dir}")
