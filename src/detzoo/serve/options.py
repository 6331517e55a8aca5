"""Request options -> the Predictor's ``SelectOptions`` (which checks the values) and the answer's format.
Options come from the query string, from multipart fields or from JSON keys; unknown names are refused, so a
typo (``score=0.5``) is an error instead of a silently ignored setting."""

from __future__ import annotations

from ..models.selection import SelectOptions
from .errors import RequestError

FORMATS = ("detzoo", "mxpi")
NUMBERS = {"score_threshold": float, "iou_threshold": float, "max_detections": int}
OPTION_NAMES = (*NUMBERS, "classes", "format")


def merge_options(*sources: dict) -> dict:
    """One dict of raw option values from several places; a name given twice is a 400."""
    merged: dict = {}
    for source in sources:
        for name, value in source.items():
            if name in merged:
                raise RequestError(400, f"option '{name}' is given twice (query string and body)")
            merged[name] = value
    return merged


def _number(name: str, value, kind: type):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RequestError(422, f"{name} must be a number, got {value!r}")
    try:
        number = kind(value) if isinstance(value, str) or kind is float else value
    except ValueError:
        raise RequestError(422, f"{name} must be {'an integer' if kind is int else 'a number'}, "
                                f"got {value!r}") from None
    if kind is int and not isinstance(number, int):
        raise RequestError(422, f"{name} must be an integer, got {value!r}")
    return number


def _class_names(value) -> list[str]:
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    raise RequestError(422, f"classes must be class names (a list, or one comma-separated string), got {value!r}")


def parse_options(raw: dict, class_names: list[str]) -> tuple[SelectOptions | None, str]:
    """(selection options or None for the model's own, answer format). Bad names or values raise a 4xx:
    RequestError here, ConfigError from SelectOptions (422)."""
    unknown = sorted(set(raw) - set(OPTION_NAMES))
    if unknown:
        raise RequestError(422, f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    answer_format = raw.get("format", "detzoo")
    if answer_format not in FORMATS:
        raise RequestError(422, f"format must be one of {', '.join(FORMATS)}, got {answer_format!r}")
    settings = {name: _number(name, raw[name], kind) for name, kind in NUMBERS.items() if name in raw}
    names = _class_names(raw["classes"]) if "classes" in raw else None
    if not settings and not names:
        return None, answer_format
    return SelectOptions.from_names(class_names, names, **settings), answer_format
