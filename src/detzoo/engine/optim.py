"""Optimiser and learning-rate schedule.

Weight decay applies to weights only (conv/linear kernels), never to biases or normalisation parameters.
The configured ``lr`` is for ``reference_batch`` images per step and is scaled linearly with the real global
batch. The schedule is a per-step multiplier: linear warm-up from ``warmup_factor`` to 1, then cosine down to
``lr_end`` (or step decay at fractions of the run, or constant).

The optimisers are torch's fused ones where the device has them (CPU and CUDA): one kernel per group, and
a step that can be skipped on the device (``step_unless``), so the trainer never waits for the device to
learn whether a loss was finite.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common.config import TrainConfig

FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused SGD and AdamW kernels


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if is_norm or name.endswith("bias") or param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scaled_lr(cfg: TrainConfig, global_batch: int) -> float:
    return cfg.lr * global_batch / cfg.reference_batch


def build_optimizer(model: nn.Module, cfg: TrainConfig, global_batch: int) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    lr = scaled_lr(cfg, global_batch)
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for group in groups for p in group["params"])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``skip`` (a bool tensor on the device). A fused optimizer decides on the
    device - the ``found_inf`` of torch's own ``GradScaler`` protocol: its kernels leave the weights and every
    state tensor as they were - so nothing waits; any other optimiser reads ``skip`` on the host (a wait)."""
    if not (getattr(optimizer, "_step_supports_amp_scaling", False) and _momentum_buffers_exist(optimizer)):
        if not bool(skip):
            optimizer.step()
        return
    optimizer.grad_scale, optimizer.found_inf = None, skip.float()
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf


def _momentum_buffers_exist(optimizer: torch.optim.Optimizer) -> bool:
    """Make SGD's missing momentum buffers, zero; False where that would change the step (dampening). Fused
    SGD's first step creates them uninitialised and fills them in its kernel, which a skipped step never
    runs (garbage momentum ever after); from zeros the first step gives momentum = gradient, as a first step
    does (exactly: 0.9 x 0 + g = g when there is no dampening)."""
    if not isinstance(optimizer, torch.optim.SGD):
        return True
    for group in optimizer.param_groups:
        if group["momentum"] == 0:
            continue
        missing = [p for p in group["params"] if optimizer.state[p].get("momentum_buffer") is None]
        if missing and group["dampening"] != 0:
            return False
        for param in missing:
            optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return True


class WarmupSchedule:
    """Step -> learning-rate multiplier. A plain object (not a lambda) so the scheduler state saves with
    ``torch.save`` and loads with ``weights_only=True``."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int, warmup_factor: float, lr_end: float,
                 milestones: list[float], gamma: float):
        self.kind = kind
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps))
        self.warmup_factor = warmup_factor
        self.lr_end = lr_end
        self.milestones = [round(m * self.total_steps) for m in milestones]
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.lr_end + (1.0 - self.lr_end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    schedule = WarmupSchedule(cfg.schedule, total, warmup, cfg.warmup_factor, cfg.lr_end, cfg.milestones, cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
