"""Timing and table helpers shared by the benchmark scripts (never used by tests)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_call(fn: Callable[[], object], warmup: int = 2, repeats: int = 5,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of one call. ``clock=time.process_time`` counts this process's CPU time instead of wall
    time (with one thread, a figure that other processes sharing the cores barely disturb)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = clock()
        fn()
        samples.append(clock() - start)
    return statistics.median(samples)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    text = [[str(c) if not isinstance(c, float) else f"{c:.2f}" for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def machine() -> str:
    import platform

    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], warmup: int = 2,
              repeats: int = 5) -> tuple[float, float]:
    """Median seconds of one call of each, the calls alternating (a, b, a, b, ...) so that load from other
    processes on a shared machine falls on both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    samples_a, samples_b = [], []
    for _ in range(repeats):
        for fn, samples in ((fn_a, samples_a), (fn_b, samples_b)):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples_a), statistics.median(samples_b)
