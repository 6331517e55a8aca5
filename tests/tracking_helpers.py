"""Shared by the tracking tests: the tracker's results on a generated video's detections
(``ShapeSequence.detections``) as MOTChallenge rows."""

from __future__ import annotations

import numpy as np

from detzoo.common.config import TrackConfig
from detzoo.data.mot import MotRows
from detzoo.tracking.bytetrack import ByteTracker


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
