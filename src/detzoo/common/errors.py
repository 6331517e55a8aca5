"""The errors detzoo raises for bad user input. Each message names the file (and line or object) and what is
wrong; the CLI prints it as one line, the service answers it with a 4xx."""

from __future__ import annotations


class DetzooError(ValueError):
    """Base class: a problem with something the user gave (file, option, dataset, model)."""


class ConfigError(DetzooError):
    """A configuration file or override is invalid; the message says where and why."""


class DataError(DetzooError):
    """Bad input data; the message names the file (and line or object) and the problem."""


class CheckpointError(DetzooError):
    """A file is not a usable detzoo checkpoint."""


class WeightsError(DetzooError):
    """A weights file does not fit the model (missing / unexpected keys, shapes)."""


class ExportError(DetzooError):
    """An export failed its check, or a file is not a usable detzoo ONNX model (the message names it)."""


class TrainingError(DetzooError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` (Python 3.11+; the same ``__notes__`` list on 3.10). The CLI prints the notes of
    an error below its one line; Python's traceback shows them after the message."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]
