"""Inference precision: ``fp32``, ``bf16`` (PyTorch: NHWC weights + bfloat16 autocast) or ``int8`` (ONNX
Runtime's quantized file). One place decides whether a device can run a precision, so that every entry point
(CLI, Predictor, torch.hub, service) refuses the same settings with the same one-line message.

bf16 is offered where the hardware computes in it: CUDA GPUs that report bfloat16 support, and CPUs with
native bfloat16 instructions (x86 AVX512-BF16 or AMX, ARM BF16) on which oneDNN has bfloat16 kernels. Elsewhere
oneDNN would emulate it, slower than fp32, so it is refused rather than silently made slower.
(torch is imported inside the functions: the CLI parser reads ``PRECISIONS`` without loading torch.)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "int8")
NATIVE_CPU_BF16 = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # torch.cpu.get_capabilities() keys


def check_known(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")
    return precision


def cpu_has_native_bf16() -> bool:
    """oneDNN has bfloat16 kernels here and the CPU executes bfloat16 arithmetic natively."""
    import torch

    capabilities = torch.cpu.get_capabilities()
    return (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and any(capabilities.get(flag) for flag in NATIVE_CPU_BF16))


def bf16_supported(device: torch.device) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def check_torch_precision(precision: str, device: torch.device) -> str:
    """The precision a PyTorch model can run in on ``device``, or a ConfigError in one line."""
    import torch

    check_known(precision)
    if precision == "int8":
        raise ConfigError("precision int8 runs on ONNX Runtime: `detzoo export CHECKPOINT` then `detzoo quantize "
                          "MODEL.onnx --data CALIBRATION_DATA` writes MODEL.int8.onnx; pass that file (or the "
                          "checkpoint, with MODEL.int8.onnx beside it)")
    if precision == "bf16" and not bf16_supported(device):
        if device.type == "cuda":
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                              "use fp32")
        cpu = torch.cpu.get_capabilities().get("cpu_name") or "this CPU"
        raise ConfigError(f"precision bf16: {cpu} has no native bfloat16 arithmetic (none of "
                          f"{', '.join(NATIVE_CPU_BF16)}; emulated it is slower than fp32); use fp32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``bf16``; nothing otherwise."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
