"""One registry of whole models: ``create_model(name, num_classes=..., **options)`` (timm style)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from ..common.errors import ConfigError
from .detector import Detector

_MODELS: dict[str, Callable[..., Detector]] = {}


def register_model(fn: Callable[..., Detector]) -> Callable[..., Detector]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    return [p for p in inspect.signature(_builder(name)).parameters if p != "num_classes"]


def _builder(name: str) -> Callable[..., Detector]:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model '{name}'{hint} (known: {', '.join(list_models())})")
    return _MODELS[name]


def create_model(name: str, num_classes: int = 80, **options) -> Detector:
    """Build a zoo model with ``num_classes`` foreground classes. Unknown names and options raise
    ConfigError."""
    builder = _builder(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise ConfigError(f"model '{name}' has no option(s) {unknown}; it takes {model_options(name)}")
    model = builder(num_classes=num_classes, **options)
    model.zoo_name = name
    return model
