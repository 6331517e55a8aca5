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

BACKEND = "inductor"  # tests use "aot_eager" where only the wiring is under test (no C++ compile)


def check_compile_available() -> None:
    """torch.compile needs a torch built with dynamo support on a supported Python: refuse in one line."""
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        raise ConfigError(f"compile: torch.compile is not supported here (torch {torch.__version__}); leave it off")


def compiled_loss(compute_loss: Callable, backend: str | None = None) -> Callable:
    """``compute_loss(images, targets)`` compiled for training; only the tensors of each target enter the
    graph (paths, ids and sizes would each be a guard, and a new one every step a recompilation)."""
    check_compile_available()
    compiled = torch.compile(compute_loss, backend=backend or BACKEND)

    def loss(images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return compiled(images, [tensors_of(target) for target in targets])

    return loss


def tensors_of(target: dict) -> dict:
    """A training target's tensors (and ``image_size``, which Faster R-CNN reads; fixed for SSD inputs), their
    sizes marked as varying: the number of boxes changes from batch to batch, and a graph specialised to the
    first batch's counts would be compiled again (the whole network with it) for the second."""
    tensors = {k: v for k, v in target.items() if isinstance(v, torch.Tensor) or k == "image_size"}
    for value in tensors.values():
        if isinstance(value, torch.Tensor) and value.dim():
            torch._dynamo.maybe_mark_dynamic(value, list(range(value.dim())))
    return tensors


def compile_for_inference(model: torch.nn.Module, device: torch.device | str,
                          backend: str | None = None) -> torch.nn.Module:
    """``model.compile_network`` in place, with CUDA graphs on a GPU; returns the model."""
    check_compile_available()
    cuda_graphs = torch.device(device).type == "cuda"
    model.compile_network(backend=backend or BACKEND, mode="reduce-overhead" if cuda_graphs else None)
    return model
