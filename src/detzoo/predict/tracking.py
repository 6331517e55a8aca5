"""Tracking on a video source: ``Predictor.track`` / ``detzoo predict MODEL SOURCE --track``.

``VideoTracking`` wraps the per-frame generator of ``video.py`` (files, cameras, streams, and image folders read
as a sequence) and hands each frame's detections to ByteTrack (``tracking/bytetrack.py``); it yields
``TrackedFrame``s whose detections are those of confirmed tracks, each with its ``track_id``. Frame indices go
to the tracker as they are, so frames skipped by ``--vid-stride`` or dropped from a live source (the freshest-
frame rule) are gaps the motion model predicts over. Lines and zones (``tracking/counting.py``) count the
tracked boxes; each frame's record carries their state, and ``finish`` writes ``<name>.tracks.json``: per track
the first and last frame and time, frames seen, the class by majority vote, the mean score and the dwell time
in each zone; per line the in / out counts by class; per zone the tracks that entered by class, the largest
occupancy and the mean dwell.

    for frame in Predictor.from_file("best.pt").track("street.mp4", lines=["0,400,1280,400"]):
        print(frame.index, frame.detections.track_ids, frame.counts)
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..common.config import TrackConfig
from ..common.files import write_json
from ..data.mot import MotRows
from ..models.selection import SelectOptions
from ..tracking.bytetrack import ByteTracker
from ..tracking.counting import Counting, Region, anchors, parse_line, parse_zone
from ..tracking.gaps import fill_gaps
from ..visualize import draw_tracking
from .image_sequence import image_sequence
from .sources import ImageSource, resolve_source
from .video import FrameResult, VideoPrediction

TRAIL = 30  # centres kept per track for the drawn trail
SUMMARY_SUFFIX = ".tracks.json"


@dataclass(frozen=True)
class TrackedFrame(FrameResult):
    counts: dict | None = None  # the lines' and zones' state after this frame (None without lines and zones)
    trails: dict = field(default_factory=dict)  # track id -> [K, 2] recent centres (tracks in this frame)
    overlays: tuple = ()  # (points, closed, label) of the lines and zones, for drawing

    def record(self) -> dict:
        record = super().record()
        if self.counts is not None:
            record["counts"] = self.counts
        return record

    def drawn(self) -> np.ndarray:
        return draw_tracking(self.image, self.detections, self.trails, list(self.overlays))


class TrackStats:
    """Per track: frames, times, class votes, score sum (the ``tracks`` of the summary)."""

    def __init__(self):
        self.tracks: dict[int, dict] = {}

    def add(self, ids: list[int], labels: list[int], scores: list[float], frame: int, timestamp: float) -> None:
        for track, label, score in zip(ids, labels, scores):
            entry = self.tracks.get(track)
            if entry is None:
                entry = self.tracks[track] = {"first_frame": frame, "first_timestamp": timestamp, "frames_seen": 0,
                                              "votes": Counter(), "score_sum": 0.0}
            entry["last_frame"], entry["last_timestamp"] = frame, timestamp
            entry["frames_seen"] += 1
            entry["votes"][label] += 1
            entry["score_sum"] += score

    def document(self, class_names: list[str], counting: Counting) -> list[dict]:
        rows = []
        for track, entry in sorted(self.tracks.items()):
            label = min(entry["votes"].items(), key=lambda item: (-item[1], item[0]))[0]  # most votes, then index
            row = {"track_id": track, "first_frame": entry["first_frame"], "last_frame": entry["last_frame"],
                   "first_timestamp": round(entry["first_timestamp"], 6),
                   "last_timestamp": round(entry["last_timestamp"], 6), "frames_seen": entry["frames_seen"],
                   "label": label, "class_name": class_names[label],
                   "mean_score": round(entry["score_sum"] / entry["frames_seen"], 5)}
            if counting.zones:
                row["zone_dwell_s"] = counting.dwell(track)
            rows.append(row)
        return rows


def _regions(items, parse) -> list[Region]:
    return [item if isinstance(item, Region) else parse(item) for item in items or ()]


class VideoTracking:
    """Iterate for ``TrackedFrame``s. The source is opened here (a bad one, a bad line or zone: one line
    before any work); ``info``, ``stats``, ``expected_frames`` and ``close`` are the prediction's."""

    def __init__(self, prediction: VideoPrediction, settings: TrackConfig | None = None, lines=(), zones=(),
                 keep_rows: bool = False):
        self.prediction, self.settings = prediction, settings or TrackConfig()
        self.source, self.info = prediction.source, prediction.info
        self.tracker = ByteTracker(self.settings)
        self.counting = Counting(_regions(lines, parse_line), _regions(zones, parse_zone), self.info.width,
                                 self.info.height, forget_after=self.settings.max_lost)
        self.class_names = prediction.predictor.class_names
        self.stats_by_track = TrackStats()
        self.trails: dict[int, deque] = {}
        self.trail_seen: dict[int, int] = {}
        self.track_s = 0.0
        self.frames = 0
        self.rows: list[tuple] | None = [] if keep_rows else None

    @property
    def stats(self):
        return self.prediction.stats

    @property
    def expected_frames(self) -> int | None:
        return self.prediction.expected_frames

    def __iter__(self):
        for result in self.prediction:
            yield self.track_frame(result)

    def track_frame(self, result: FrameResult) -> TrackedFrame:
        clock = time.perf_counter()
        det = result.detections
        ids = self.tracker.update(det.boxes.numpy(), det.scores.numpy(), result.index)
        keep = ids >= 0
        tracked = det.select(torch.from_numpy(keep))
        tracked.track_ids = torch.from_numpy(ids[keep])
        track_ids, boxes = ids[keep], tracked.boxes.numpy().astype(float)
        labels, scores = tracked.labels.tolist(), tracked.scores.tolist()
        names = [self.class_names[label] for label in labels]
        counts = None
        if self.counting:
            self.counting.update(track_ids, boxes, names, result.index, result.timestamp)
            counts = self.counting.state()
        self.stats_by_track.add(track_ids.tolist(), labels, scores, result.index, result.timestamp)
        if self.rows is not None:
            self.rows += [(result.index + 1, t, box, s) for t, box, s in zip(track_ids.tolist(), boxes, scores)]
        trails = self._trails(track_ids, boxes, result.index)
        self.track_s += time.perf_counter() - clock
        self.frames += 1
        return TrackedFrame(result.index, result.timestamp, tracked, result.image, counts, trails,
                            tuple(self._overlays(counts)))

    def _trails(self, ids: np.ndarray, boxes: np.ndarray, frame: int) -> dict[int, np.ndarray]:
        for track, centre in zip(ids.tolist(), anchors(boxes)):
            self.trails.setdefault(track, deque(maxlen=TRAIL)).append(centre)
            self.trail_seen[track] = frame
        for track in [t for t, seen in self.trail_seen.items() if frame - seen > self.settings.max_lost]:
            del self.trails[track], self.trail_seen[track]
        return {track: np.asarray(self.trails[track]) for track in ids.tolist()}

    def _overlays(self, counts: dict | None) -> list[tuple[np.ndarray, bool, str]]:
        if counts is None:
            return []
        overlays = []
        for number, (points, state) in enumerate(zip(self.counting.line_points, counts["lines"]), start=1):
            overlays.append((points, False, f"line {number}: in {state['in_total']}, out {state['out_total']}"))
        for number, (points, state) in enumerate(zip(self.counting.zone_points, counts["zones"]), start=1):
            overlays.append((points, True, f"zone {number}: {state['total']} inside"))
        return overlays

    def mot_rows(self, max_gap: int = 0) -> MotRows:
        """The tracked boxes as MOTChallenge results (frames from 1), gaps of up to ``max_gap`` frames filled
        (``keep_rows`` must be on)."""
        if self.rows is None:
            raise ValueError("VideoTracking(keep_rows=True) keeps the rows")
        if not self.rows:
            return MotRows.empty()
        boxes = np.asarray([row[2] for row in self.rows], dtype=float)
        boxes[:, 2:] -= boxes[:, :2]
        rows = MotRows(np.asarray([row[0] for row in self.rows], np.int64), np.asarray([row[1] for row in self.rows]),
                       boxes, np.asarray([row[3] for row in self.rows]), np.full(len(boxes), -1, np.int64),
                       np.ones(len(boxes)))
        return fill_gaps(rows, max_gap)

    def summary(self) -> dict:
        """The ``tracks.json`` document."""
        return {"source": self.source.url, "name": self.source.name, "frames": self.frames,
                "width": self.info.width, "height": self.info.height, "fps": float(self.info.fps),
                "tracker": vars(self.settings), **self.counting.totals(),
                "tracks": self.stats_by_track.document(self.class_names, self.counting)}

    def stage_seconds(self) -> dict[str, float]:
        return {**self.prediction.stage_seconds(), "track": self.track_s}

    def summary_text(self) -> str:
        parts = [f"{len(self.stats_by_track.tracks)} track(s)"]
        for number, line in enumerate(self.counting.lines, start=1):
            state = line.state()
            parts.append(f"line {number}: in {state['in_total']}, out {state['out_total']}")
        for number, zone in enumerate(self.counting.zones, start=1):
            parts.append(f"zone {number}: {sum(zone.entered.values())} entered")
        return ", ".join(parts)

    def finish(self, out: Path) -> list[Path]:
        return [write_json(self.summary(), Path(out) / f"{self.source.name}{SUMMARY_SUFFIX}")]

    def close(self) -> None:
        self.prediction.close()


def track_source(predictor, source, options: SelectOptions | None = None, settings: TrackConfig | None = None,
                 lines=(), zones=(), keep_rows: bool = False, **video) -> VideoTracking:
    """``Predictor.track``: the lines and zones are checked first, then the source is opened (a folder or glob
    of images is read as a sequence). The selection keeps boxes down to the tracker's ``low_score`` unless
    ``options`` set a score threshold."""
    settings = settings or predictor.tracking or TrackConfig()
    lines, zones = _regions(lines, parse_line), _regions(zones, parse_zone)
    if isinstance(source, (str, Path)):
        source = resolve_source(str(source), live=video.get("live"))
    if isinstance(source, ImageSource):
        source = image_sequence(source)
    if options is None or options.score_threshold is None:
        options = replace(options or SelectOptions(), score_threshold=settings.low_score)
    prediction = VideoPrediction(predictor, source, options, **video)
    try:
        return VideoTracking(prediction, settings, lines, zones, keep_rows)
    except BaseException:
        prediction.close()
        raise
