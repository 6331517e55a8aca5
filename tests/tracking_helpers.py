"""Shared by the tracking tests: detections made from a generated video's ground truth (jittered, some
dropped), and the tracker's results on them as MOTChallenge rows."""

from __future__ import annotations

import numpy as np

from detzoo.common.config import TrackConfig
from detzoo.data.mot import MotRows
from detzoo.tracking.bytetrack import ByteTracker
from detzoo.tracking.sequences import MIN_VISIBLE


def jittered_detections(sequence, jitter: float, drop: float, seed: int):
    """Per frame (boxes xyxy, scores, ground-truth rows): the boxes a detector could see (visibility >=
    MIN_VISIBLE) moved by N(0, jitter) px per coordinate, a share ``drop`` missing at random; the score falls
    with the visibility (0.95 whole, under high_score below 40 %) so that ByteTrack's second association works."""
    rng = np.random.default_rng(seed)
    gt = sequence.ground_truth()
    frames = []
    for frame in range(1, sequence.frames + 1):
        rows = gt.in_frame(frame)
        rows = rows[gt.visibility[rows] >= MIN_VISIBLE]
        rows = rows[rng.random(len(rows)) >= drop]
        boxes = gt.boxes[rows].copy()
        boxes[:, 2:] += boxes[:, :2]
        frames.append((boxes + rng.normal(0, jitter, boxes.shape), 0.2 + 0.75 * gt.visibility[rows], rows))
    return frames


def track_rows(frames, settings: TrackConfig | None = None) -> MotRows:
    tracker = ByteTracker(settings)
    found = []
    for index, (boxes, scores, _) in enumerate(frames):
        ids = tracker.update(boxes, scores, index)
        found += [(index + 1, i, box, s) for i, box, s in zip(ids, boxes, scores) if i >= 0]
    boxes = np.array([f[2] for f in found])
    boxes[:, 2:] -= boxes[:, :2]
    return MotRows(np.array([f[0] for f in found]), np.array([f[1] for f in found]), boxes,
                   np.array([f[3] for f in found]), np.full(len(found), -1), np.ones(len(found)))
