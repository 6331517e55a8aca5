"""Filling a track's gaps after the fact: where a track was matched in frames a and b > a + 1 and b - a - 1 <=
``max_gap``, the frames between get its box linearly interpolated (the score of the lower end). An online
tracker can only report what each frame showed; an offline evaluation of a whole sequence knows both ends of a
gap - the post-processing of ByteTrack's own MOTChallenge results (its ``tools/interpolation.py``), written here
on arrays because it is a dozen lines."""

from __future__ import annotations

import numpy as np

from ..data.mot import MotRows


def fill_gaps(rows: MotRows, max_gap: int) -> MotRows:
    """``rows`` (tracker results) with the gaps of up to ``max_gap`` frames of every track filled."""
    if max_gap < 1 or len(rows) == 0:
        return rows
    order = np.lexsort((rows.frames, rows.ids))
    frames, ids, boxes, scores = rows.frames[order], rows.ids[order], rows.boxes[order], rows.flags[order]
    step = np.diff(frames)
    gaps = np.flatnonzero((ids[1:] == ids[:-1]) & (step > 1) & (step <= max_gap + 1))
    if not len(gaps):
        return rows
    lengths = step[gaps] - 1
    start = np.repeat(gaps, lengths)
    offset = np.concatenate([np.arange(1, n + 1) for n in lengths])
    weight = (offset / step[start])[:, None]
    new_boxes = boxes[start] * (1 - weight) + boxes[start + 1] * weight
    new_scores = np.minimum(scores[start], scores[start + 1])
    count = len(start)
    return MotRows(np.concatenate([rows.frames, frames[start] + offset]), np.concatenate([rows.ids, ids[start]]),
                   np.concatenate([rows.boxes, new_boxes]), np.concatenate([rows.flags, new_scores]),
                   np.concatenate([rows.classes, np.full(count, -1, dtype=np.int64)]),
                   np.concatenate([rows.visibility, np.ones(count)]))
