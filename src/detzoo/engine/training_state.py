"""What ``last.pt`` holds beyond the weights, and putting a ``Trainer`` back from it: optimiser, schedule,
gradient scaler, EMA, epoch / step (also mid-epoch), the epoch's running losses, the count of non-finite
steps in a row, the best score, callbacks' state, and every process's random states."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.checkpoints import model_payload
from ..common.distributed import all_gather_objects
from .ema import ema_state, load_ema_state
from .rng_state import restore_rng_states, rng_states

if TYPE_CHECKING:
    from .trainer import Trainer


def training_state(trainer: Trainer, gather: bool = True) -> dict:
    """Everything needed to continue exactly. Under DDP every process calls it at the same point: the
    random states of all processes are gathered (rank r restores its own); ``gather=False`` (after an error,
    when the other processes may not be there) keeps this process's alone."""
    rng = rng_states()
    state = model_payload(trainer.model, trainer.config.to_dict(), trainer.class_names)
    state.update({
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.epoch,
        "batch_in_epoch": trainer.batch_in_epoch,
        "step": trainer.step,
        "epoch_losses": {"sums": dict(trainer.epoch_loss_sums), "count": trainer.epoch_loss_count},
        "best_score": trainer.best_score,
        "best_ranking": trainer.best_ranking,
        "evals_without_improvement": trainer.evals_without_improvement,
        "nonfinite_in_row": trainer.nonfinite_in_row,
        "skipped_samples": trainer.skipped_samples,
        "rng": rng,
        "rng_per_rank": all_gather_objects(rng) if trainer.dist.enabled and gather else [rng],
        "callbacks": [c.state_dict() if hasattr(c, "state_dict") else {} for c in trainer.callbacks],
    })
    if trainer.ema is not None:
        state.update(ema_state(trainer.ema))
    return state


def restore_training_state(trainer: Trainer, state: dict) -> None:
    """Put ``trainer`` back where ``training_state`` was taken; the metrics rows of later epochs go."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.batch_in_epoch, trainer.step = state["epoch"], state["batch_in_epoch"], state["step"]
    epoch_losses = state.get("epoch_losses", {})
    trainer.epoch_loss_sums = dict(epoch_losses.get("sums", {}))
    trainer.epoch_loss_count = epoch_losses.get("count", 0)
    trainer.best_score = state["best_score"]
    # an older last.pt has the primary metric alone: ties on it then go to the later checkpoint
    trainer.best_ranking = state.get("best_ranking") or ([["mAP", state["best_score"]]]
                                                         if state["best_score"] is not None else [])
    trainer.evals_without_improvement = state.get("evals_without_improvement", 0)
    trainer.nonfinite_in_row = state.get("nonfinite_in_row", 0)
    trainer.skipped_samples = state.get("skipped_samples", 0)
    if trainer.ema is not None:
        load_ema_state(trainer.ema, state)
    for callback, cb_state in zip(trainer.callbacks, state.get("callbacks", [])):
        if hasattr(callback, "load_state_dict"):
            callback.load_state_dict(cb_state)
    per_rank = state.get("rng_per_rank") or []
    # another process count than before: every process takes rank 0's states (augmentation does not
    # care: it is seeded per sample)
    restore_rng_states(per_rank[trainer.dist.rank] if len(per_rank) == trainer.dist.world_size else state["rng"])
    trainer.metrics.truncate(trainer.epoch)
    if state.get("finished_epoch_row") is not None:  # saved after an error at the end of this epoch
        trainer.finished_epoch = (trainer.epoch, dict(state["finished_epoch_row"]))
