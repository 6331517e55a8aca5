"""Atomic file writes: every file detzoo writes (checkpoints, ONNX models, JSON, CSV, plots, datasets) goes to
a temporary file in the same folder, is flushed to disk and renamed over the target, so a reader - or a crash
at any moment - sees either the previous file or the complete new one, never half of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """``dir/name`` -> ``dir/.name.tmp-PID`` (hidden, and unique per process)."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{os.getpid()}")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """``with atomic_write(path, "wb") as handle: ...``: the file appears at ``path`` only once the block has
    finished without an exception; an exception (or a kill) leaves the previous file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(path, json.dumps(obj))


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


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the half-written temporary files a killed process left behind (``.last.pt.tmp-PID``)."""
    stale = [p for p in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


CACHE_ENV = "DETZOO_CACHE"


def cache_folder() -> Path:
    """Where detzoo keeps what it may compute again (the image checks of ``data.preflight``): ``$DETZOO_CACHE``,
    else ``$XDG_CACHE_HOME/detzoo``, else ``~/.cache/detzoo``. Made by whoever writes to it."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detzoo"
