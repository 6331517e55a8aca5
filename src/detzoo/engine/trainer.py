"""The training core: a short loop with a handful of hook points (detectron2 style).

``Trainer.fit`` runs epochs of ``train_step`` (autocast forward -> loss -> backward -> one all-reduce ->
clip -> step -> EMA), then the epoch end: evaluation when due, checkpoints (``last.pt``, ``epoch_N.pt``,
``best.pt``), a ``metrics.csv`` row, callbacks (plots, TensorBoard) and one log line. Everything needed to
continue exactly is in ``last.pt``, also when it is written every ``save_every_steps`` inside an epoch.

The step never waits for the device: a step whose loss (on any process) or gradient is not finite is skipped
on the device (``optim.step_unless``; the EMA keeps its values too), and the host learns about it from
``collect``, which brings the steps' records over every ``train.log_every_steps`` steps, before every
checkpoint and at the end of each epoch - in step order: warnings, the count of non-finite steps in a row
(an error after ``max_nonfinite``), the epoch's running losses, the progress shown.

Under DDP every decision is taken by all processes together, from one small all-reduce per step that
carries the losses of every process and a "stop" flag: a non-finite loss on any process skips the step
everywhere, and SIGINT/SIGTERM reaching any process stops all of them after the same step - the first step
at which they all collect after the vote - with ``last.pt`` saved and the command that resumes printed. A
single process stops after the step in progress.

Any other error stops the DataLoader workers at once and, once the run has taken an optimiser step, leaves a
resumable ``last.pt`` too (an epoch whose evaluation failed is kept with its row: the resumed run evaluates it
first), with the resume command as a note on the error (``fit``).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..common.checkpoints import atomic_save
from ..common.config import Config
from ..common.device import data_workers
from ..common.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
from ..common.errors import TrainingError, add_note
from ..data.loader import Batch
from ..data.records import DetectionData
from ..data.targets import Targets
from ..data.transforms import normalize
from ..data.workers import stop_loader_workers
from ..evaluation.base import thresholds_line
from .best import compare, ranking
from .compiled import compiled_loss
from .evaluate import evaluate_model
from .optim import step_unless
from .precise_bn import recompute_bn_statistics
from .progress import ProgressLines, StepLog, bar_postfix, epoch_line, progress_line
from .run_folder import MetricsLog
from .signals import StopRequest, resume_command
from .training_state import restore_training_state, training_state

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the state was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "ended by this signal"


class Callback:
    """Hook points. ``after_interval`` runs each time the trainer collects its steps (``Trainer.collect``)
    with their mean losses (empty when every one was skipped). ``after_train`` runs when ``fit`` ends,
    normally or by an exception. A callback with state implements state_dict/load_state_dict (saved in
    checkpoints)."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_interval(self, trainer: Trainer, losses: dict[str, float]) -> None: ...

    def after_epoch(self, trainer: Trainer, row: dict) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


class StepModule(nn.Module):
    """``forward(images, targets) -> losses``, so DDP sees the whole training computation. ``compile``: the
    detector's ``compute_loss`` through ``torch.compile`` (``engine/compiled.py``; the detector itself, and
    so its state dict, stays as it is)."""

    def __init__(self, detector: nn.Module, compile: bool = False):
        super().__init__()
        self.detector = detector
        self.compiled_loss = compiled_loss(detector.compute_loss) if compile else None

    def forward(self, images: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        if self.compiled_loss is not None:
            return self.compiled_loss(images, targets)
        return self.detector.compute_loss(images, targets)


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
        self.best_score: float | None = None  # the primary metric of best.pt
        self.best_ranking: list = []  # best.pt's (name, value) pairs in ranking order (``engine/best.py``)
        self.evals_without_improvement = 0
        self.nonfinite_in_row = 0
        self.skipped_samples = 0
        self.stop_request = StopRequest(announce=self.dist.is_main)  # SIGINT/SIGTERM to this process
        self.stop_voted = False  # a process was asked to stop, as collected (all processes agree)
        self.step_log = StepLog(self.dist.world_size)
        self.last_losses: dict[str, float] = {}  # the mean losses of the last collected interval
        self._votes = torch.tensor([0.0, 1.0], device=device)  # this process's stop vote, without a copy per step
        self.metrics = MetricsLog(self.run_dir / "metrics.csv")
        self.last_eval = None
        self.last_eval_detections: list = []  # the detections behind last_eval (rank 0), for the pictures
        self.finished_epoch: tuple[int, dict] | None = None  # (epoch, its row) while its end is not yet saved
        self._saving = False  # a checkpoint is being written (an error there is not followed by another write)

    # ------------------------------------------------------------------ state

    def state_dict(self, gather: bool = True) -> dict:
        """Everything needed to continue exactly (``training_state``; ``gather=False`` after an error, when
        the other processes may not be there: this process's random states alone)."""
        return training_state(self, gather)

    def load_state_dict(self, state: dict) -> None:
        restore_training_state(self, state)

    def save(self, *names: str) -> None:
        """Write the state to each named file in the run folder (rank 0). Every process must call it (and
        does so at the same step), so the steps not yet collected are collected here."""
        self.collect()
        self._saving = True
        state = self.state_dict()
        if self.dist.is_main:
            for name in names:
                atomic_save(state, self.run_dir / name)
        self._saving = False

    # ------------------------------------------------------------------ loop

    def log(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text)

    def fit(self) -> None:
        """Train to the last epoch (or ``max_steps``, an early stop, a stop request). On an error the workers
        are stopped at once and the state is kept (``_keep_state_after_error``) before the error goes on."""
        steps_at_start = self.step
        try:
            with self.stop_request:
                for callback in self.callbacks:
                    callback.before_train(self)
                while self.epoch < self.cfg.epochs and not self._max_steps_reached():
                    finished = self.finished_epoch  # from last.pt: trained, its end (evaluation) failed
                    row = finished[1] if finished and finished[0] == self.epoch else self._train_epoch()
                    if row is None:  # stopped inside the epoch (max_steps)
                        break
                    self.finished_epoch = (self.epoch, dict(row))  # kept by an error before _end_epoch saves
                    stop = self._end_epoch(row)
                    self.finished_epoch = None
                    if stop:
                        break
        except TrainingInterrupted:  # a stop request: saved, and the resume command printed
            raise
        except BaseException as exc:
            stop_loader_workers()  # or, kept alive by the error's traceback, they would block the exit
            if not isinstance(exc, KeyboardInterrupt):  # a repeated signal means "now", without saving
                self._keep_state_after_error(exc, steps_at_start)
            raise
        finally:
            for callback in self.callbacks:
                callback.after_train(self)

    def _keep_state_after_error(self, exc: BaseException, steps_at_start: int) -> None:
        """Save ``last.pt`` when this run has taken an optimiser step - not when the error came from writing a
        checkpoint (the previous one stands) nor after a TrainingError (a diverged state; its message names the
        last checkpoint) - and note on the error where the state is and the command that resumes (rank 0).
        Nothing collective: the other processes may be gone (``collect`` only reads this process's records)."""
        if not self.dist.is_main:
            return
        last = self.run_dir / "last.pt"
        saved = ""
        if self.step > steps_at_start and not self._saving and not isinstance(exc, TrainingError):
            try:
                self.collect()  # the steps not yet read belong in the saved epoch's running losses
                state = self.state_dict(gather=False)
                if self.finished_epoch is not None and self.finished_epoch[0] == self.epoch:
                    state["finished_epoch_row"] = self.finished_epoch[1]  # the resumed run evaluates it first
                atomic_save(state, last)
            except Exception as save_error:  # noqa: BLE001 - reported on the error being raised, not instead of it
                add_note(exc, f"the training state could not be saved to {last}: {save_error}")
                return
            saved = f"; state saved to {last}"
        if not last.is_file():
            return
        add_note(exc, f"training stopped by this error at epoch {self.epoch + 1}, step {self.step}{saved}. Resume, "
                      f"once the cause is fixed, with:\n  {resume_command(self.run_dir, self.dist)}")

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
        first = self.batch_in_epoch
        bar = tqdm(self.train_loader, total=total, initial=self.batch_in_epoch,
                   disable=not (self.dist.is_main and sys.stderr.isatty()),
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", dynamic_ncols=True, leave=False)
        lines = ProgressLines(self.cfg.progress_every_s if self.dist.is_main and bar.disable else 0.0)
        for batch in bar:
            self.train_step(batch)
            self.batch_in_epoch += 1
            self.step += 1
            images_seen += len(batch) * self.dist.world_size
            # a single process acts on its own signal at once; processes vote, and act on collected votes
            stop_here = not self.dist.enabled and self.stop_request.signum is not None
            save_due = bool(self.cfg.save_every_steps) and self.step % self.cfg.save_every_steps == 0
            line_due = lines.due()  # a single process may collect any time; processes only when all do
            if (self.step % self.cfg.log_every_steps == 0 or self.batch_in_epoch == total or save_due
                    or stop_here or self._max_steps_reached() or (line_due and not self.dist.enabled)):
                if self.collect() is not None:
                    rate = images_seen / max(time.time() - start, 1e-6)
                    bar.set_postfix(bar_postfix(self.last_losses, self.optimizer.param_groups[0]["lr"], rate,
                                                self.device), refresh=False)
            if line_due:
                elapsed = time.time() - start
                self.log(progress_line(self.epoch + 1, self.cfg.epochs, self.batch_in_epoch, total, self.last_losses,
                                       self.optimizer.param_groups[0]["lr"], images_seen / max(elapsed, 1e-6),
                                       (total - self.batch_in_epoch) * elapsed / (self.batch_in_epoch - first)))
            if stop_here or self.stop_voted:
                bar.close()
                self._stop_for_signal()
            if save_due:
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

    def train_step(self, batch: Batch) -> None:
        """One optimiser step, queued without waiting for the device; ``collect`` reads its record. The step
        changes no weight, optimiser state or EMA when a loss on some process, or the gradient, is not finite
        (decided on the device); the schedule advances either way."""
        self.skipped_samples += batch.skipped
        images = normalize(batch.images.to(self.device, non_blocking=True), self.model.preprocess,
                           batch.image_sizes)  # padding 0, as the model sees it in evaluation
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch.targets.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.amp):
            losses = self.step_module(images, targets)
        loss = sum(losses.values())
        self.scaler.scale(loss).backward()  # every process, so DDP's gradient all-reduce always completes
        # The one per-step collective: stop requests and every process's losses, summed (asynchronous on GPUs).
        vote = self._votes[1:] if self.stop_request.signum is not None else self._votes[:1]
        shared = all_reduce_sum(torch.cat([vote, torch.stack([*losses.values(), loss]).detach().float()]))
        self.scaler.unscale_(self.optimizer)  # fp16: the true gradients (a no-op otherwise)
        gradient_norm = self._gradient_norm()
        skip = ~(torch.isfinite(shared[1:]).all() & torch.isfinite(gradient_norm))
        step_unless(self.optimizer, skip)
        self.scaler.update()  # fp16: back off after an overflow, from the scaler's own check
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model, keep=~skip)
        self.step_log.add(self.step + 1, [*losses, "loss"], shared, gradient_norm)

    def _gradient_norm(self) -> torch.Tensor:
        """The global gradient norm, clipped to ``train.grad_clip`` when set."""
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.grad_clip:
            return torch.nn.utils.clip_grad_norm_(parameters, self.cfg.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in parameters])

    def collect(self) -> dict[str, float] | None:
        """Bring the records of the steps since the last call to the host (the training loop's one wait for
        the device) and act on them in step order: a non-finite step is warned about and counted (a
        ``TrainingError`` after ``train.max_nonfinite`` in a row), the others' losses go to the epoch's running
        sums; a stop vote sets ``stop_voted``. Every process calls it at the same steps, so all agree.
        Returns the interval's mean losses (also in ``last_losses`` and given to the callbacks), None when
        there was nothing to collect or every step was skipped."""
        records = self.step_log.pull()
        if not records:
            return None
        sums: dict[str, float] = {}
        finite = 0
        for record in records:
            self.stop_voted |= record.stop_votes > 0
            if not all(math.isfinite(v) for v in record.losses.values()):
                self._nonfinite(record.step, record.losses, "loss")
                continue
            # fp16: a gradient overflow is the scaler's business (it skipped the step and backs off), as before
            if not math.isfinite(record.gradient_norm) and not self.scaler.is_enabled():
                self._nonfinite(record.step, record.losses, "gradient")
                continue
            self.nonfinite_in_row = 0
            self.epoch_loss_count += 1
            finite += 1
            for key, value in record.losses.items():
                self.epoch_loss_sums[key] = self.epoch_loss_sums.get(key, 0.0) + value
                sums[key] = sums.get(key, 0.0) + value
        means = {key: value / finite for key, value in sums.items()}
        for callback in self.callbacks:
            callback.after_interval(self, means)
        if not finite:
            return None
        self.last_losses = means
        return means

    def _nonfinite(self, step: int, losses: dict[str, float], what: str) -> None:
        self.nonfinite_in_row += 1
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        self.log(f"warning: non-finite {what} at step {step} ({shown}); step skipped "
                 f"({self.nonfinite_in_row} in a row, train.max_nonfinite={self.cfg.max_nonfinite})")
        if self.nonfinite_in_row >= self.cfg.max_nonfinite:
            last = self.run_dir / "last.pt"
            saved = f"The last checkpoint is {last}" if last.exists() else "No checkpoint was written yet"
            raise TrainingError(
                f"the {what} was non-finite for {self.nonfinite_in_row} steps in a row (train.max_nonfinite="
                f"{self.cfg.max_nonfinite}); training stopped at step {step}. Lower train.lr, set "
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
            data_workers(self.config.data.workers), self.device, self.dist, self.config.eval.iou_thresh,
            self.config.eval.score_thresh)
        return result

    def _end_epoch(self, row: dict) -> bool:
        """Evaluate when due, save checkpoints, log. Returns True to stop early."""
        stop = False
        improved = False
        why = ""
        if self.cfg.precise_bn and (self._eval_due() or self.epoch + 1 == self.cfg.epochs):
            recompute_bn_statistics(self.model, self.train_loader.dataset.data, self.cfg.precise_bn,
                                    self.config.eval.batch_size, self.device, 0, self.dist,
                                    target=self.eval_model)
        if self._eval_due():
            result = self.evaluate()
            keys = self._shared_ranking(result)
            if result is not None:
                self.last_eval = result
                row.update({f"val_{k}": v for k, v in result.metrics.items()})
            improved, better, why = compare(keys, self.best_ranking)
            if improved:
                self.best_score, self.best_ranking = keys[0][1], [list(pair) for pair in keys]
            if better:
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
        self.log(epoch_line(row, self.cfg.epochs, improved))
        if self.last_eval is not None and self._eval_row(row):
            thresholds = self.last_eval.thresholds
            said = [thresholds_line(thresholds["evaluation"], thresholds["model"])] if thresholds else []
            self.log("  " + "; ".join(said + ([why] if why else [])))
        if stop:
            self.log(f"early stop: no improvement of val {self._primary_name()} in "
                     f"{self.evals_without_improvement} evaluation(s) (train.early_stop={self.cfg.early_stop}); "
                     f"best {self.best_score:.4f} in {self.run_dir / 'best.pt'}")
        barrier()
        return stop

    @staticmethod
    def _eval_row(row: dict) -> bool:
        return any(key.startswith("val_") for key in row)

    @staticmethod
    def _shared_ranking(result) -> tuple[tuple[str, float], ...]:
        """The result's ranking keys (``engine/best.py``): rank 0's (the one that evaluates), on every process."""
        return all_gather_objects(ranking(result.metrics, result.primary) if result is not None else ())[0]

    def _primary_name(self) -> str:
        return self.last_eval.primary if self.last_eval is not None else "metric"

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

