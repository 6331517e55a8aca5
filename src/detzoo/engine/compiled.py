"""``torch.compile`` for training (``train.compile=true``) and inference (``--compile`` of predict / eval / serve).

Training compiles the detector's ``compute_loss`` - network forward and loss, one graph (or a few, where the
loss has data-dependent steps) whose backward inductor generates too - inside ``StepModule``, so DDP,
autocast and the gradient scaler wrap it unchanged. Nothing is wrapped in an ``OptimizedModule``: the model's
state dict keys stay as they are (no ``_orig_mod.`` prefix), and checkpoints load everywhere as before.

Inference compiles the network in place (``Detector.compile_network``); on CUDA in inductor's
"reduce-overhead" mode, which records it as CUDA graphs, one per input shape (SSD: one per batch size), so that
a batch-1 call replays one graph instead of launching every kernel from Python. Selection and NMS stay eager.

The first call of each shape compiles (tens of seconds on a CPU, with a C++ compiler); later calls reuse it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common.errors import ConfigError
from ..data.targets import Targets

BACKEND = "inductor"  # tests use "aot_eager" where only the wiring is under test (no C++ compile)


def check_compile_available() -> None:
    """torch.compile needs a torch built with dynamo support on a supported Python: refuse in one line."""
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        raise ConfigError(f"compile: torch.compile is not supported here (torch {torch.__version__}); leave it off")


def compiled_loss(compute_loss: Callable, backend: str | None = None) -> Callable:
    """``compute_loss(images, targets)`` compiled for training; only the padded tensors of the batch's targets,
    each image's object count and its size enter the graph (paths and ids would each be a guard, and a new one
    every step a recompilation)."""
    check_compile_available()
    compiled = torch.compile(compute_loss, backend=backend or BACKEND)

    def loss(images: torch.Tensor, targets: Targets | list[dict]) -> dict[str, torch.Tensor]:
        return compiled(images, graph_targets(Targets.from_dicts(targets)))

    return loss


def graph_targets(targets: Targets) -> Targets:
    """What of a batch's targets a compiled loss sees: the padded tensors, their batch and object dimensions
    marked as varying (G moves in steps of ``targets.OBJECT_PAD`` between batches, and a graph specialised to
    the first batch's would be compiled again, the whole network with it), the object counts and each image's
    ``image_size`` (Faster R-CNN reads it; fixed for SSD inputs). The batched SSD loss reads the tensors alone."""
    tensors = targets._tensors()
    for tensor in tensors:
        torch._dynamo.maybe_mark_dynamic(tensor, [0, 1])
    meta = [{"image_size": m["image_size"]} if "image_size" in m else {} for m in targets.meta]
    return Targets(*tensors, counts=targets.counts, meta=meta)


def compile_for_inference(model: torch.nn.Module, device: torch.device | str,
                          backend: str | None = None) -> torch.nn.Module:
    """``model.compile_network`` in place, with CUDA graphs on a GPU; returns the model."""
    check_compile_available()
    cuda_graphs = torch.device(device).type == "cuda"
    model.compile_network(backend=backend or BACKEND, mode="reduce-overhead" if cuda_graphs else None)
    return model
