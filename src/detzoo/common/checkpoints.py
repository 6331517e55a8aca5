"""Checkpoint files: only state dicts and plain values, so they load with ``torch.load(weights_only=True)``;
written atomically (``files.atomic_write``), so a crash during a save leaves the previous checkpoint intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .errors import CheckpointError
from .files import atomic_write

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file renamed over ``path``."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, or a run folder's ``last.pt``; CheckpointError names the file when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip files, foreign objects
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a detzoo checkpoint (no 'model' and 'config' entries)")
    return state


def model_payload(model: torch.nn.Module, config: dict, class_names: list[str]) -> dict[str, Any]:
    """What every checkpoint needs to rebuild and use the model."""
    return {"format": CHECKPOINT_FORMAT, "version": __version__, "model": model.state_dict(),
            "config": config, "class_names": list(class_names)}
