"""torch.distributed helpers. Processes are started by ``torchrun`` (which sets RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE); detzoo never relaunches itself. Every helper is a no-op in a plain
single-process run, so the same code path serves both."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun); usable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (NCCL for CUDA, gloo for the CPU) and bind a CUDA
    process to its local GPU. Returns the process's place and the device it trains on."""
    if not launched_by_torchrun():
        return DistInfo(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # before the group: NCCL and the barriers use the current device
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process; ``[obj]`` in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (and return it)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
    return value


def global_normalizer(count: torch.Tensor) -> torch.Tensor:
    """What to divide a loss summed over this process's batch by, so that DDP's gradient average equals the
    gradient of one process holding the whole global batch: the count summed over all processes (at least 1)
    divided by the number of processes. In one process it is the count itself (at least 1).

    Example: the SSD losses are summed over anchors and divided by the number of positive anchors in the
    batch; dividing each process's sum by its own count instead would weight images unevenly under DDP."""
    count = count.detach().float()
    if not is_distributed():
        return count.clamp(min=1.0)
    total = count.clone()
    dist.all_reduce(total)
    return total.clamp(min=1.0) / dist.get_world_size()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
