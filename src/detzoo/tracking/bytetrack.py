"""ByteTrack (Zhang et al., ECCV 2022): identities for the detections of consecutive frames.

Each frame, every track's box is predicted by a constant-velocity Kalman filter (``kalman.py``), then:
1. detections scoring at least ``high_score`` are matched to the confirmed tracks (tracked and lost), by IoU
   (x the detection's score with ``fuse_score``) with the predicted boxes;
2. the detections between ``low_score`` and ``high_score`` are matched, at a stricter IoU, to the tracks that
   were tracked until this frame and found no partner in step 1 - an occluded or blurred object's score drops,
   and this keeps its track alive instead of starting a new one later; tracks still unmatched become lost;
3. the high-score detections left over are matched to the tentative tracks (born in earlier frames, not yet
   confirmed); a tentative track that misses a frame is dropped;
4. high-score detections still left start tentative tracks; a track is confirmed - and given the next id -
   after ``min_hits`` consecutive matches (at once in the first frame); a lost track is kept ``max_lost``
   frames of the source, its box predicted, and takes its id back when matched again.
Every matching is an optimal assignment (``scipy.optimize.linear_sum_assignment``) on 1 - similarity clipped
at the acceptance threshold, which is exactly ByteTrack's ``lap.lapjv(..., cost_limit=...)``: a pair at the
limit costs what leaving both unmatched costs (see ``_match``).

Tracks are rows of arrays (state, ids, hits, Kalman means and covariances), so a frame of 50 objects costs a
few array operations, not 50 Python objects. Written here rather than taken from supervision, by measurement:
``benchmarks/bench_track.py`` and docs/design.md ("Tracking").
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..common.config import TrackConfig
from . import kalman

TENTATIVE, TRACKED, LOST = 0, 1, 2


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, 4] x [B, 4] xyxy -> [A, B] IoU (0 where a box has no area)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    left_top = np.maximum(a[:, None, :2], b[None, :, :2])
    right_bottom = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(right_bottom - left_top, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(similarity: np.ndarray, least: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal pairs (rows, columns) with similarity above ``least``. The cost 1 - similarity is clipped at the
    limit 1 - least, so a pair beyond it costs exactly what an unmatched row and column cost together in
    ``lapjv(cost_limit=limit)``: the sum over pairs below the limit of (cost - limit) is what both minimise."""
    if similarity.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    limit = 1.0 - least
    cost = np.minimum(1.0 - similarity, limit)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < limit
    return rows[keep], cols[keep]


class ByteTracker:
    """``update(boxes, scores, frame)`` once per frame, in order; returns each detection's track id (-1: not
    part of a confirmed track this frame). Ids are 1, 2, 3 ... in the order tracks are confirmed."""

    def __init__(self, settings: TrackConfig | None = None):
        self.settings = settings or TrackConfig()
        self.frame: int | None = None  # of the last update
        self.next_id = 1
        self.state = np.zeros(0, dtype=np.int8)
        self.ids = np.zeros(0, dtype=np.int64)  # 0 while tentative
        self.hits = np.zeros(0, dtype=np.int64)  # consecutive matched frames
        self.last_seen = np.zeros(0, dtype=np.int64)  # frame of the last match
        self.mean = np.zeros((0, 8))
        self.covariance = np.zeros((0, 8, 8))

    def __len__(self) -> int:
        """Tracks held (tentative, tracked and lost)."""
        return len(self.state)

    def predicted_boxes(self) -> np.ndarray:
        """[T, 4] xyxy: every held track's box as the filter has it now."""
        return kalman.cxcywh_to_xyxy(self.mean[:, :4])

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame: int | None = None) -> np.ndarray:
        """``boxes`` [N, 4] xyxy and ``scores`` [N] of one frame; ``frame`` its index in the source (default:
        the next one) - a gap (a stride, a dropped frame) is predicted over. Returns track ids [N] (int64)."""
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        frame = (0 if self.frame is None else self.frame + 1) if frame is None else int(frame)
        first = self.frame is None
        if not first and frame <= self.frame:
            raise ValueError(f"frames must increase: got frame {frame} after frame {self.frame}")
        if len(self.state):
            self.mean, self.covariance = kalman.predict(self.mean, self.covariance, 1 if first else frame - self.frame)
        self.frame = frame
        settings = self.settings
        finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        usable = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (scores >= settings.low_score)
        high = np.flatnonzero(usable & (scores >= settings.high_score))
        low = np.flatnonzero(usable & (scores < settings.high_score))
        matched = np.full(len(boxes), -1, dtype=np.int64)  # row of the track each detection joins
        predicted = self.predicted_boxes()

        # 1. high-score detections <-> confirmed tracks (tracked and lost)
        pool = np.flatnonzero(self.state != TENTATIVE)
        rows, cols = _match(self._similarity(predicted[pool], boxes[high], scores[high], settings.fuse_score),
                            settings.match_iou)
        matched[high[cols]] = pool[rows]
        high_left = np.delete(high, cols)
        # 2. low-score detections <-> tracks tracked until now and unmatched in step 1
        pool_left = np.delete(pool, rows)
        tracked_left = pool_left[self.state[pool_left] == TRACKED]
        rows, cols = _match(box_iou(predicted[tracked_left], boxes[low]), settings.low_match_iou)
        matched[low[cols]] = tracked_left[rows]
        # 3. remaining high-score detections <-> tentative tracks
        tentative = np.flatnonzero(self.state == TENTATIVE)
        rows, cols = _match(self._similarity(predicted[tentative], boxes[high_left], scores[high_left],
                                             settings.fuse_score), settings.match_iou)
        matched[high_left[cols]] = tentative[rows]
        births = np.delete(high_left, cols)

        detections = np.flatnonzero(matched >= 0)
        tracks = matched[detections]
        if len(tracks):
            self.mean[tracks], self.covariance[tracks] = kalman.update(
                self.mean[tracks], self.covariance[tracks], kalman.xyxy_to_cxcywh(boxes[detections]))
        was_matched = np.zeros(len(self.state), dtype=bool)
        was_matched[tracks] = True
        self.hits = np.where(was_matched, self.hits + 1, 0)
        self.last_seen[tracks] = frame
        confirming = was_matched & (self.state == TENTATIVE) & (self.hits >= settings.min_hits)
        self.state[was_matched & (self.state == LOST)] = TRACKED
        self.state[~was_matched & (self.state == TRACKED)] = LOST
        keep = (was_matched | (self.state == LOST)) & (frame - self.last_seen <= settings.max_lost)
        self._confirm(confirming)
        self._keep(keep)
        self._add(boxes[births], frame, confirmed=first or settings.min_hits <= 1)

        # the ids of confirmed tracks matched in this frame (their rows moved: look them up by detection)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        rows_now = np.cumsum(keep) - 1  # old row -> new row
        for_detections = rows_now[tracks]
        confirmed = self.state[for_detections] == TRACKED
        ids[detections[confirmed]] = self.ids[for_detections[confirmed]]
        born = len(self.state) - len(births)
        born_confirmed = self.state[born:] == TRACKED
        ids[births[born_confirmed]] = self.ids[born:][born_confirmed]
        return ids

    @staticmethod
    def _similarity(tracks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, fuse: bool) -> np.ndarray:
        iou = box_iou(tracks, boxes)
        return iou * scores[None, :] if fuse else iou

    def _confirm(self, rows: np.ndarray) -> None:
        count = int(rows.sum())
        self.state[rows] = TRACKED
        self.ids[rows] = np.arange(self.next_id, self.next_id + count)
        self.next_id += count

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("state", "ids", "hits", "last_seen", "mean", "covariance"):
            setattr(self, name, getattr(self, name)[keep])

    def _add(self, boxes: np.ndarray, frame: int, confirmed: bool) -> None:
        count = len(boxes)
        if not count:
            return
        mean, covariance = kalman.initiate(kalman.xyxy_to_cxcywh(boxes))
        ids = np.arange(self.next_id, self.next_id + count) if confirmed else np.zeros(count, dtype=np.int64)
        self.next_id += count if confirmed else 0
        self.state = np.concatenate([self.state, np.full(count, TRACKED if confirmed else TENTATIVE, np.int8)])
        self.ids = np.concatenate([self.ids, ids])
        self.hits = np.concatenate([self.hits, np.ones(count, dtype=np.int64)])
        self.last_seen = np.concatenate([self.last_seen, np.full(count, frame, dtype=np.int64)])
        self.mean = np.concatenate([self.mean, mean])
        self.covariance = np.concatenate([self.covariance, covariance])
