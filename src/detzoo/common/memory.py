"""Keep freed memory inside the process, so that large tensors do not page-fault on every forward pass.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it
back with ``munmap`` when it is freed. A detector's activations at batch 8 are larger than that (MobileNetV2
at 300 px: 69 MB for one expanded block; Faster R-CNN at 768 x 1280: 63 MB at batch 1), so each forward pass
asked the kernel for hundreds of MB of new zeroed pages: 14 000 minor page faults and 30 ms of kernel time per
image for ``ssd300_mobilenetv2`` at batch 8, none at batch 1 - the batch cliff of ``bench_deploy.py``.
ONNX Runtime never had it: its arena allocator keeps memory.

``retain_freed_memory`` sets glibc's ``M_MMAP_MAX`` to 0 (large blocks come from the heap too) and
``M_TRIM_THRESHOLD`` to -1 (the heap is never shrunk), through ``mallopt``. The process then keeps its peak
memory and reuses it, as ONNX Runtime's arena, PyTorch's CUDA caching allocator and the jemalloc settings of
``torch.backends.xeon.run_cpu`` do. No Python library exposes ``mallopt``, hence ctypes. It is a no-op on C
libraries other than glibc, and ``DETZOO_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_MAX = -4

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the malloc settings once per process; True when they are in force."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("DETZOO_KEEP_FREED_MEMORY", "1") != "0" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(None)
            _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    return _applied
