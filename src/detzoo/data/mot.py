"""MOTChallenge text files: ground truth (``gt/gt.txt``) and tracker results, one box per line.

    ground truth: frame, id, left, top, width, height, flag, class, visibility
    results:      frame, id, left, top, width, height, score, -1, -1, -1

Frames count from 1; boxes are in pixels (left, top, width, height). In ground truth, ``flag`` 0 marks a box the
evaluation ignores (MOTChallenge's "consider" flag). Values are separated by commas (spaces are accepted too).
A line that is not such a row stops the reading with one line naming the file, the line and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.errors import DataError
from ..common.files import write_text

GT_COLUMNS = "frame, id, left, top, width, height, flag[, class, visibility]"
RESULT_COLUMNS = "frame, id, left, top, width, height[, score, ...]"
_SEPARATOR = re.compile(r"\s*,\s*|\s+")


@dataclass
class MotRows:
    """Rows of one file as arrays (one entry per box)."""

    frames: np.ndarray  # int64 [R], from 1
    ids: np.ndarray  # int64 [R]
    boxes: np.ndarray  # float64 [R, 4] left, top, width, height
    flags: np.ndarray  # float64 [R]: ground truth's consider flag (0: ignored), results' score
    classes: np.ndarray  # int64 [R] (-1 where the file has none)
    visibility: np.ndarray  # float64 [R] (1 where the file has none)

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def empty(cls) -> MotRows:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64),
                   np.zeros(0))

    def in_frame(self, frame: int) -> np.ndarray:
        """Indices of the rows of one frame."""
        return np.flatnonzero(self.frames == frame)


def read_mot(path: str | Path, ground_truth: bool = True) -> MotRows:
    """Parse a ground-truth (``ground_truth``) or results file. Every row is checked: numbers, a frame >= 1, an
    id >= 0 and unique within its frame, a positive width and height."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (MOTChallenge rows: {GT_COLUMNS})") from None
    least, columns = (7, GT_COLUMNS) if ground_truth else (6, RESULT_COLUMNS)
    rows: list[list[float]] = []
    seen: dict[tuple[int, int], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        fields = [f for f in _SEPARATOR.split(line.strip()) if f]
        if len(fields) < least:
            raise DataError(f"{where}: expected at least {least} values ({columns}), got {len(fields)}")
        values = []
        for column, field in enumerate(fields[:9], start=1):
            try:
                value = float(field)
            except ValueError:
                raise DataError(f"{where}: column {column} '{field}' is not a number") from None
            if not np.isfinite(value):
                raise DataError(f"{where}: column {column} is {field}")
            values.append(value)
        frame, track, width, height = values[0], values[1], values[4], values[5]
        if frame != int(frame) or frame < 1:
            raise DataError(f"{where}: the frame must be a whole number from 1, got {fields[0]}")
        if track != int(track) or track < 0:
            raise DataError(f"{where}: the id must be a whole number from 0, got {fields[1]}")
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: the box must have a positive width and height, got {fields[4]} x {fields[5]}")
        key = (int(frame), int(track))
        if key in seen:
            raise DataError(f"{where}: id {key[1]} appears twice in frame {key[0]} (also line {seen[key]})")
        seen[key] = number
        values += [1.0] * (7 - len(values))  # results may stop after the box: score 1
        rows.append(values[:7] + [values[7] if len(values) > 7 else -1.0, values[8] if len(values) > 8 else 1.0])
    if not rows:
        return MotRows.empty()
    table = np.asarray(rows)
    return MotRows(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2:6], table[:, 6],
                   table[:, 7].astype(np.int64), table[:, 8])


def format_rows(rows: MotRows, ground_truth: bool = False) -> str:
    """The file's text: results as ``frame,id,left,top,width,height,score,-1,-1,-1``; ground truth with its flag,
    class and visibility."""
    lines = []
    for i in np.lexsort((rows.ids, rows.frames)):
        left, top, width, height = (f"{v:.2f}" for v in rows.boxes[i])
        head = f"{rows.frames[i]},{rows.ids[i]},{left},{top},{width},{height}"
        if ground_truth:
            lines.append(f"{head},{rows.flags[i]:g},{rows.classes[i]},{rows.visibility[i]:.3f}")
        else:
            lines.append(f"{head},{rows.flags[i]:.5f},-1,-1,-1")
    return "".join(line + "\n" for line in lines)


def write_mot(rows: MotRows, path: str | Path, ground_truth: bool = False) -> Path:
    """Write rows (sorted by frame, then id), atomically."""
    return write_text(path, format_rows(rows, ground_truth))
