"""Print the configuration reference of docs/configuration.md: every key of the config schema
(``detzoo.common.config``) with its type, default, allowed values and the comment the schema gives it.

    python tools/config_reference.py      # the tables; tests/test_docs.py checks that the page holds them
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from detzoo.common import config as schema  # noqa: E402

SECTIONS = [("model", schema.ModelConfig), ("data", schema.DataConfig), ("data.train / data.val (each dataset)",
            schema.DatasetSpec), ("data.augment", schema.AugmentConfig), ("train", schema.TrainConfig),
            ("eval", schema.EvalConfig), ("track", schema.TrackConfig)]


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field's line in the class body."""
    lines, _ = inspect.getsourcelines(cls)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0]
        if number in comments and name.isidentifier():
            found[name] = comments[number]
    return found


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return "(a section)"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        value = [round(v, 4) for v in value]
    if value is None:
        return "null"
    return '`""`' if value == "" else f"`{value}`"


def type_of(cls: type, f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(cls)[f.name]
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "").replace("detzoo.common.config.", "")


def section_table(title: str, cls: type) -> str:
    comments = field_comments(cls)
    doc = (cls.__doc__ or "").strip()
    rows = [f"### `{title}`", ""]
    if doc and not doc.startswith(cls.__name__ + "("):
        rows += [" ".join(doc.split()), ""]
    rows += ["| key | type | default | values | what it does |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        choices = ", ".join("null" if c is None else str(c) for c in f.metadata.get("choices", ()))
        text = comments.get(f.name, "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{f.name}` | {type_of(cls, f).replace('|', chr(92) + '|')} | {default_of(f)} | {choices} "
                    f"| {text} |")
    return "\n".join(rows)


def reference() -> str:
    return "\n\n".join(section_table(title, cls) for title, cls in SECTIONS)


if __name__ == "__main__":
    print(reference())
