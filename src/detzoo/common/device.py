"""Which torch device a command runs on."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a GPU
    that is not there, is a ConfigError in one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}': no CUDA GPU is available here (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}': there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a container's, a SLURM job's share), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def data_workers(requested: int | None) -> int:
    """DataLoader worker processes: ``requested``, or by default the CPUs this process has - its share when
    torchrun starts several processes per machine (``LOCAL_WORLD_SIZE``) - less one for the process itself.
    (A recipe's fixed 8 on a 2-core machine only adds contention, and torch warns about it every epoch.)"""
    if requested is not None:
        return requested
    share = available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, share - 1)
