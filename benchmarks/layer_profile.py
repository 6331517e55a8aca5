"""Where an eager model's time goes, by layer kind (``bench_deploy.py --profile``): each leaf module is timed
with forward hooks during one batch through the Predictor's backend, and its operations are counted; what is in
no leaf module (box decoding, selection, proposals, Python between layers) is the rest of the batch's time. A
kind with a large share of the time and a small share of the operations is where a model falls short of the
machine's peak (e.g. memory-bound depthwise convolutions)."""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from common import print_table
from torch.utils.flop_counter import FlopCounterMode

from detzoo.common.precision import bf16_supported
from detzoo.data.transforms import normalize
from detzoo.engine.inference import inference_backend

KINDS = ("dense conv", "depthwise conv", "deformable conv", "linear", "other layers", "outside layers")


def layer_kind(module: torch.nn.Module) -> str:
    if type(module).__name__ == "DeformConv2d":
        return "deformable conv"
    if isinstance(module, torch.nn.Conv2d):
        return "depthwise conv" if module.groups > 1 and module.groups == module.in_channels else "dense conv"
    return "linear" if isinstance(module, torch.nn.Linear) else "other layers"


def leaves(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    return {name: m for name, m in model.named_modules()
            if not any(True for _ in m.children()) or isinstance(m, kinds) or type(m).__name__ == "DeformConv2d"}


def operations_by_kind(model, images, sizes) -> dict[str, float]:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.detect(images, sizes)
    counts = counter.get_flop_counts()  # keyed by the module's path under its class name: "SSD.backbone...."
    prefix = type(model).__name__
    by_kind: dict[str, float] = defaultdict(float)
    for name, module in leaves(model).items():
        by_kind[layer_kind(module)] += sum(counts.get(f"{prefix}.{name}", {}).values())
    return by_kind


def time_by_kind(backend, batch) -> tuple[dict[str, float], float]:
    spent: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}
    handles = []
    for module in leaves(backend.model).values():
        kind = layer_kind(module)
        handles.append(module.register_forward_pre_hook(lambda m, a: started.__setitem__(id(m), time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, kind=kind: spent.__setitem__(kind, spent[kind] + time.perf_counter() - started[id(m)])))
    try:
        backend(batch)  # warm-up
        spent.clear()
        start = time.perf_counter()
        backend(batch)
        total = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    spent["outside layers"] = total - sum(spent.values())
    return spent, total


def print_layer_profile(name: str, model: torch.nn.Module, batch) -> None:
    images = normalize(batch.images, model.preprocess)
    operations = operations_by_kind(model, images, batch.image_sizes)
    rows = []
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not bf16_supported(torch.device("cpu")):
            continue
        spent, total = time_by_kind(inference_backend(model, "cpu", precision), batch)
        row = [name, f"eager {precision}", f"{total * 1000 / len(batch):.1f}"]
        for kind in KINDS:
            share = spent.get(kind, 0.0) / total
            rate = operations.get(kind, 0.0) / spent[kind] / 1e9 if spent.get(kind) else 0.0
            row.append(f"{share:.0%}" + (f" ({rate:.0f})" if operations.get(kind) else ""))
        rows.append(row)
    flops = sum(operations.values())
    shares = ", ".join(f"{kind} {operations[kind] / flops:.0%}" for kind in KINDS if operations.get(kind))
    print_table(f"{name}: share of the batch-{len(batch)} time by layer kind (GFLOP/s achieved); share of the "
                f"operations: {shares}", ["model", "path", "ms/img", *KINDS], rows)
