"""What the training loader costs at each epoch's start, and what its workers run with: the causes of issue 16's
end-to-end gap that the CPU can measure.

- **epoch start**: seconds from asking the loader for an epoch to its first batch, with workers made anew every
  epoch (``persistent_workers=False``, detzoo before issue 16) and with the persistent workers of
  ``data.loader.train_loader``. A training process is large (a CUDA context, the model, the dataset's records):
  ``--parent-gb`` of touched memory makes this one as large, since forking copies its page tables.
- **threads per worker**: OS threads in each worker process (``/proc/self/task``; the multiprocessing queue's
  feeder thread included), torch's intra-op threads and OpenCV's, after the worker has augmented samples.

    python benchmarks/bench_loader.py [--workers 2] [--epochs 3] [--parent-gb 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import machine, print_table
from torch.utils.data import DataLoader

from detzoo.common.config import AugmentConfig, DatasetSpec
from detzoo.data import loader as loader_module
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset, TrainBatchSampler, close_loader, train_loader
from detzoo.data.transforms import Preprocess, train_transform

DEFAULT_DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128"


class Reporting(DetectionDataset):
    """A training sample plus (pid, OS threads, torch threads, OpenCV threads) of the process that made it."""

    def __getitem__(self, key):
        import cv2

        image, target = super().__getitem__(key)
        target["threads"] = (os.getpid(), len(os.listdir("/proc/self/task")), torch.get_num_threads(),
                             cv2.getNumThreads())
        return image, target


def fresh_workers_loader(dataset, sampler) -> DataLoader:
    """detzoo's training loader before issue 16: workers made anew for every epoch."""
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=Collate(1), num_workers=ARGS.workers,
                      persistent_workers=False, prefetch_factor=2, worker_init_fn=loader_module.ignore_stop_signals)


def measure(make) -> tuple[list[float], set]:
    data = read_dataset(DatasetSpec(str(ARGS.data)))
    dataset = Reporting(data, train_transform(Preprocess((300, 300)), AugmentConfig()))
    sampler = TrainBatchSampler(data, ARGS.batch, seed=0)
    loader = make(dataset, sampler)
    starts, seen = [], set()
    for epoch in range(ARGS.epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        batches = iter(loader)
        first = next(batches)
        starts.append(time.perf_counter() - start)
        for batch in [first, *batches]:
            seen.update(target["threads"] for target in batch.targets)
    close_loader(loader)
    return starts, seen


def main() -> None:
    ballast = torch.ones(int(ARGS.parent_gb * 2**30) // 4)  # touched: the parent is this large when it forks
    print(f"machine: {machine()}; parent process {ballast.numel() * 4 / 2**30:.1f} GB of ballast, "
          f"{ARGS.workers} workers, batch {ARGS.batch} at 300 px, {ARGS.data}")
    rows, thread_rows = [], []
    for name, make in (("fresh workers every epoch (before)", fresh_workers_loader),
                       ("persistent workers (train_loader)", lambda d, s: train_loader(d, s, 1, ARGS.workers))):
        starts, seen = measure(make)
        later = starts[1:] or starts
        rows.append([name, *[f"{s:.2f}" for s in starts], f"{sum(later) / len(later):.2f}"])
        pids = sorted({entry[0] for entry in seen})
        threads = sorted({entry[1] for entry in seen})
        thread_rows.append([name, len(pids), f"{min(threads)}-{max(threads)}",
                            sorted({entry[2] for entry in seen}), sorted({entry[3] for entry in seen})])
    print_table("Epoch start: seconds from asking for an epoch to its first batch",
                ["loader", *[f"epoch {e + 1}" for e in range(ARGS.epochs)], "mean after the first"], rows)
    print_table("Worker processes over all epochs, and their threads", ["loader", "worker processes",
                "OS threads each", "torch threads", "OpenCV threads"], thread_rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--parent-gb", type=float, default=2.0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ARGS = parser.parse_args()
    main()
