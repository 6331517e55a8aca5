"""Exponential moving average (EMA) of the weights, kept by torch's ``AveragedModel``.

The decay ramps up over the first updates, ``decay x (1 - exp(-updates / warmup))`` (the YOLOv5 / timm
practice): with a constant 0.9998 the average would still be 80 % random initialisation after a thousand
steps, and the evaluations that pick ``best.pt`` would score that. Buffers (BatchNorm statistics) are
averaged too; integer buffers are copied.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(updates: int, decay: float, warmup: int) -> float:
    """The decay used for an update after ``updates`` earlier ones."""
    return decay * (1.0 - math.exp(-updates / warmup)) if warmup > 0 else decay


class WarmupEMA:
    """``AveragedModel``'s ``multi_avg_fn``: one EMA update of a group of same-dtype tensors."""

    def __init__(self, decay: float, warmup: int):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if averaged and not torch.is_floating_point(averaged[0]):
            for avg, cur in zip(averaged, current):
                avg.copy_(cur)
            return
        decay = ema_decay(int(num_averaged), self.decay, self.warmup)
        get_ema_multi_avg_fn(decay)(averaged, current, num_averaged)


def build_ema(model: nn.Module, decay: float, warmup: int) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=WarmupEMA(decay, warmup), use_buffers=True)


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
