"""Timing and table helpers shared by the benchmark scripts (never used by tests)."""

from __future__ import annotations

import math
import os
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


def shown(path: str | os.PathLike) -> str:
    """A path as the tables print it: relative to the folder the script runs in (``../shared/data/coco128``,
    ``runs/x``), so that no output names the machine's own folders; as given where no relative path exists
    (another drive on Windows)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def machine() -> str:
    """The machine line every benchmark prints first: absolute times differ between machines (and with the
    load on them), ratios between columns of one run hold."""
    import os
    import platform

    capabilities = torch.cpu.get_capabilities()
    features = [name for name in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "bf16", "sve")
                if capabilities.get(name)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{capabilities.get('cpu_name') or platform.processor() or 'cpu'} ({platform.machine()}; "
            f"{', '.join(features) or 'no bf16/int8 dot-product instructions'}), {cpus} CPUs for this process, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def best_rate(fn: Callable[[], object], operations: float, repeats: int = 5,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Operations per second of the fastest of ``repeats`` calls (after one warm-up)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return operations / best


def peak_rates(side: int = 2048, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """This machine's attainable compute in this process, operations/s: the best rate of a large fp32, bf16
    and int8 matrix product (the roofline's ceilings), and of a 3x3 convolution in fp32 and bf16 (NHWC). A
    convolution faster than the product of its precision is not doing the multiplications counted for it
    (Winograd or FFT algorithms): then fractions of the peak above 1 are possible."""
    gemm = 2.0 * side ** 3
    a, b = torch.randn(side, side), torch.randn(side, side)
    a16, b16 = a.bfloat16(), b.bfloat16()
    rates = {"fp32": best_rate(lambda: torch.mm(a, b), gemm, clock=clock),
             "bf16": best_rate(lambda: torch.mm(a16, b16), gemm, clock=clock)}
    a8, b8 = torch.randint(-128, 128, (side, side), dtype=torch.int8), torch.randint(-128, 128, (side, side),
                                                                                     dtype=torch.int8)
    rates["int8"] = best_rate(lambda: torch._int_mm(a8, b8), gemm, clock=clock)
    x = torch.randn(1, 256, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3).contiguous(memory_format=torch.channels_last)
    conv = 2.0 * 256 * 256 * 9 * 64 * 64
    rates["conv3x3 fp32"] = best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), conv, clock=clock)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rates["conv3x3 bf16"] = best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), conv, clock=clock)
    return rates


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
