"""Exponential moving average (EMA) of the weights, kept in torch's ``AveragedModel``.

The decay ramps up over the first updates, ``decay x (1 - exp(-updates / warmup))`` (the YOLOv5 / timm
practice): with a constant 0.9998 the average would still be 80 % random initialisation after a thousand
steps, and the evaluations that pick ``best.pt`` would score that. Buffers (BatchNorm statistics) are
averaged too; integer buffers are copied.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(updates: int, decay: float, warmup: int) -> float:
    """The decay used for an update after ``updates`` earlier ones."""
    return decay * (1.0 - math.exp(-updates / warmup)) if warmup > 0 else decay


class WarmupEMA(AveragedModel):
    """torch's ``AveragedModel`` (the averaged copy, its update count, its state dict) with the warm-up decay
    and an update that never waits for the device: ``AveragedModel.update_parameters`` copies its count to
    the device and reads it back every step; here the count stays on the host and float tensors move by one
    ``_foreach_lerp_`` (what ``get_ema_multi_avg_fn`` does); integer buffers are copied."""

    def __init__(self, model: nn.Module, decay: float, warmup: int):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1], got {decay}")
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.warmup = warmup

    @torch.no_grad()
    def update_parameters(self, model: nn.Module, keep: torch.Tensor | None = None) -> None:
        """One update towards ``model`` (the first copies: decay 0). ``keep``, a bool tensor on the device,
        False for the trainer's skipped steps, leaves every averaged tensor exactly as it was, decided on the
        device (``torch.where``: a NaN that the skipped step left in the model's BatchNorm statistics stays
        out, where a weight of 0 would multiply it in); the update is still counted."""
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        is_float = [a.is_floating_point() for a in averaged]
        float_pairs = ([a for a, f in zip(averaged, is_float) if f], [c for c, f in zip(current, is_float) if f])
        weight = 1.0 - ema_decay(int(self.n_averaged), self.decay, self.warmup)  # n_averaged stays on the CPU
        if keep is None:
            if float_pairs[0]:
                torch._foreach_lerp_(*float_pairs, weight)
            for avg, cur, f in zip(averaged, current, is_float):
                if not f:
                    avg.copy_(cur)
        else:
            moved = iter(torch._foreach_lerp(*float_pairs, weight) if float_pairs[0] else ())
            for avg, cur, f in zip(averaged, current, is_float):
                torch.where(keep, next(moved) if f else cur, avg, out=avg)
        self.n_averaged += 1


def build_ema(model: nn.Module, decay: float, warmup: int) -> WarmupEMA:
    return WarmupEMA(model, decay, warmup)


def ema_state(ema: AveragedModel) -> dict:
    """What a checkpoint keeps: the averaged weights as a plain model state dict (``load_model`` prefers
    them) and the update count (so the decay ramp continues exactly after a resume)."""
    return {"ema": ema.module.state_dict(), "ema_updates": int(ema.n_averaged)}


def load_ema_state(ema: AveragedModel, state: dict) -> bool:
    """Restore from a checkpoint; False when it has no EMA (the average then starts from the model)."""
    if not state.get("ema"):
        return False
    ema.module.load_state_dict(state["ema"])
    ema.n_averaged.fill_(int(state.get("ema_updates", 1)))
    return True
