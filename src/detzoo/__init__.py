"""detzoo: a PyTorch object-detection model zoo (SSD family, Faster R-CNN with DCNv2).

    import detzoo
    model = detzoo.load("best.pt")          # a checkpoint, run folder, .onnx file or zoo recipe name
    results = model.predict("photos/")

``load``, ``Model`` and ``Result`` are imported when first used (PEP 562), so ``import detzoo`` - and the
``detzoo`` command's start-up - stay free of torch; calling ``load`` imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .api import load
    from .api.model import Model
    from .predict.results import Result

_LAZY = {"load": ("api", "load"), "Model": ("api.model", "Model"), "Result": ("predict.results", "Result")}
__all__ = ["Model", "Result", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'detzoo' has no attribute '{name}'")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
