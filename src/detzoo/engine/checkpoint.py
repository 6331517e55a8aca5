"""Checkpoints: only state dicts and plain values, so they load with ``torch.load(weights_only=True)``.
Every write goes to a temporary file in the same folder and is renamed over the target, so a crash during
a save leaves the previous checkpoint intact."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A file is not a usable detzoo checkpoint."""


TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, flushed to disk, then renamed over ``path``:
    readers (and a crash at any moment) see either the previous file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms / file systems; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the half-written temporary files a killed process left behind (``.last.pt.tmp-PID``)."""
    stale = [p for p in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path) -> dict[str, Any]:
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


def rng_states() -> dict[str, Any]:
    """The random states of this process: Python, NumPy, torch CPU and the current CUDA device (only that
    one: touching every visible GPU would create a CUDA context on each from every DDP process)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if isinstance(cuda, list):  # older checkpoints held every visible device's state
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def model_payload(model: torch.nn.Module, config: dict, class_names: list[str]) -> dict[str, Any]:
    """What every checkpoint needs to rebuild and use the model."""
    return {"format": CHECKPOINT_FORMAT, "version": __version__, "model": model.state_dict(),
            "config": config, "class_names": list(class_names)}
