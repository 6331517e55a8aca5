"""How inference uses the machine: memory kept between batches, DataLoader workers per CPU.

The batch cliff's cause, checked without a clock: at batch 8 every forward pass asked the kernel for
hundreds of MB of fresh pages (glibc hands blocks above 32 MiB out with mmap and unmaps them when freed), so
each call paid ~14 000 minor page faults per image. A backend keeps freed memory and reuses it."""

import os
import resource
import statistics

import torch

from detzoo.common.device import data_workers
from detzoo.common.memory import retain_freed_memory
from detzoo.data.loader import Batch
from detzoo.engine.inference import TorchBackend
from detzoo.models import create_model

BATCH = 8
SIDE = 300


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_a_batch_of_8_reuses_memory_instead_of_page_faulting():
    """ssd300_mobilenetv2 at 300 px, batch 8: its largest activations are 8 x 96 x 150 x 150 floats = 69 MB
    each, about 550 MB per call in all (140 000 pages of 4 KiB), which page-faulted on every call before (about
    141 000 faults on every call, measured). With the memory kept, the heap grows to its high-water mark and
    then calls touch no new page. When the heap grows depends on how the two threads' frees interleave: in 8
    runs of 15 calls here it grew on one to three calls after the first (at call 1, 2, 3, 5 or 11), by 4 000 to
    34 000 faults, and never otherwise. So the test looks at twelve calls after the first: the heap may grow in a
    few of them, but most - the median - must stay under 2 000 faults (8 MB, room for Python's and the
    allocator's own bookkeeping)."""
    torch.manual_seed(0)
    backend = TorchBackend(create_model("ssd300_mobilenetv2", num_classes=80))
    assert retain_freed_memory()  # glibc, as on CI; DETZOO_KEEP_FREED_MEMORY=0 turns it off
    images = torch.randint(0, 256, (BATCH, 3, SIDE, SIDE), dtype=torch.uint8)
    batch = Batch(images, [{} for _ in range(BATCH)], [(SIDE, SIDE)] * BATCH)
    backend(batch)  # the first call grows the heap most of the way
    faults = []
    for _ in range(12):
        before = minor_faults()
        backend(batch)
        faults.append(minor_faults() - before)
    assert statistics.median(faults) < 2000, f"minor page faults per call: {faults}"


def test_default_workers_follow_the_cpus_this_process_has(monkeypatch):
    """The CPUs of the affinity mask (a container's or a SLURM job's share), divided among torchrun's processes
    on the node, less one for the process itself; an explicit count is kept."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert data_workers(None) == 1
    assert data_workers(8) == 8 and data_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert data_workers(None) == 7
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert data_workers(None) == 0
