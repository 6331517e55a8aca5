"""Counting tracked objects: crossings of lines (in / out per class) and presence in zones (occupancy per class,
dwell time per track). A track's position is its box's centre (the anchor).

Lines (``--line x1,y1,x2,y2``): "in" is a crossing to the side the line's direction (x1,y1) -> (x2,y2) points
to when turned a quarter clockwise on screen (a line drawn left to right counts downward movement as in; drawn
upwards, movement to the right). A crossing counts when the anchor, having been settled on one side, is seen
settled on the other, and its path last crossed the line between the line's ends (not on its extension);
settled means farther from the line than ``BAND`` x the box's shorter side, so a box jittering on the line does
not count. Each track counts at most once per line and direction.

Zones (``--zone x1,y1,x2,y2,x3,y3,...``, a polygon): a track is inside while its anchor is
(``matplotlib.path.Path.contains_points``); the dwell time adds the time between consecutive frames in which the
track was seen inside; ``entered`` counts each track once per zone.

Coordinates are pixels of the source, or - when every number is within [0, 1] - fractions of its width and
height. A line of 3 numbers or a zone of 2 points is one line naming the option and what it needs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolygonPath

from ..common.errors import ConfigError

BAND = 0.1  # of the box's shorter side: how far from a line the anchor must be to be on a side


@dataclass(frozen=True)
class Region:
    """A line or a zone as the user gave it."""

    kind: str  # "line" or "zone"
    values: tuple[float, ...]
    text: str

    @property
    def fractions(self) -> bool:
        return all(0.0 <= v <= 1.0 for v in self.values)

    def pixels(self, width: int, height: int) -> np.ndarray:
        """[K, 2] points in pixels of a ``width`` x ``height`` frame."""
        points = np.asarray(self.values, dtype=float).reshape(-1, 2)
        return points * [width, height] if self.fractions else points


def _numbers(option: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v != "")
    except ValueError:
        raise ConfigError(f"{option} {text}: expected comma-separated numbers") from None
    if not all(np.isfinite(values)):
        raise ConfigError(f"{option} {text}: numbers must be finite")
    return values


def parse_line(text: str) -> Region:
    values = _numbers("--line", text)
    if len(values) != 4:
        raise ConfigError(f"--line {text}: a line is 4 numbers x1,y1,x2,y2 (pixels, or fractions of the frame "
                          f"in [0, 1]), got {len(values)}")
    if values[:2] == values[2:]:
        raise ConfigError(f"--line {text}: the two ends are the same point")
    return Region("line", values, text)


def parse_zone(text: str) -> Region:
    values = _numbers("--zone", text)
    if len(values) % 2:
        raise ConfigError(f"--zone {text}: a zone is x,y pairs (x1,y1,x2,y2,x3,y3,...), got an odd count of "
                          f"{len(values)} numbers")
    if len(values) < 6:
        raise ConfigError(f"--zone {text}: a zone is a polygon of at least 3 points (x1,y1,x2,y2,x3,y3,...), "
                          f"got {len(values) // 2}")
    points = np.asarray(values).reshape(-1, 2)
    area = 0.5 * abs(np.dot(points[:, 0], np.roll(points[:, 1], 1)) - np.dot(points[:, 1], np.roll(points[:, 0], 1)))
    if area == 0:
        raise ConfigError(f"--zone {text}: the polygon has no area (its points are on one line)")
    return Region("zone", values, text)


def anchors(boxes: np.ndarray) -> np.ndarray:
    """[N, 2] box centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


class LineCounter:
    def __init__(self, ends: np.ndarray):
        self.start, self.end = ends[0].astype(float), ends[1].astype(float)
        direction = self.end - self.start
        self.normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
        self.length2 = float(direction @ direction)
        self.tracks: dict[int, dict] = {}  # id -> settled side, last point and distance, last crossing, frame
        self.counts: dict[str, Counter] = {"in": Counter(), "out": Counter()}

    def update(self, ids: np.ndarray, boxes: np.ndarray, labels: list[str], frame: int) -> None:
        points = anchors(boxes)
        distance = (points - self.start) @ self.normal
        band = BAND * np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        for track, point, signed, margin, label in zip(ids.tolist(), points, distance, band, labels):
            state = self.tracks.setdefault(track, {"side": 0, "point": None, "distance": 0.0, "crossing": None,
                                                   "counted": set()})
            if state["point"] is not None and signed * state["distance"] < 0:  # the path crossed the line: where
                t = state["distance"] / (state["distance"] - signed)
                state["crossing"] = state["point"] + t * (point - state["point"])
            state.update(point=point, distance=signed, frame=frame)
            if abs(signed) <= margin:  # on the line: it keeps the side it had
                continue
            side = 1 if signed > 0 else -1
            before, state["side"] = state["side"], side
            if before in (0, side) or state["crossing"] is None or not self._on_segment(state["crossing"]):
                continue
            direction = "in" if side > 0 else "out"
            if direction not in state["counted"]:
                state["counted"].add(direction)
                self.counts[direction][label] += 1

    def _on_segment(self, crossing: np.ndarray) -> bool:
        """Whether a point of the line lies between its ends."""
        along = (crossing - self.start) @ (self.end - self.start) / self.length2
        return 0.0 <= along <= 1.0

    def forget(self, before: int) -> None:
        """Drop the tracks last seen before frame ``before`` (their counts stay)."""
        for track in [t for t, state in self.tracks.items() if state["frame"] < before]:
            del self.tracks[track]

    def state(self) -> dict:
        return {"in": dict(self.counts["in"]), "out": dict(self.counts["out"]),
                "in_total": sum(self.counts["in"].values()), "out_total": sum(self.counts["out"].values())}


class ZoneCounter:
    def __init__(self, polygon: np.ndarray):
        self.path = PolygonPath(polygon)
        self.dwell: dict[int, float] = {}  # id -> seconds inside
        self.frames_inside: dict[int, int] = {}
        self.last_inside: dict[int, float] = {}  # id -> timestamp of the last frame it was seen inside
        self.entered: Counter = Counter()
        self.occupancy: Counter = Counter()
        self.inside: list[int] = []
        self.max_occupancy = 0

    def update(self, ids: np.ndarray, boxes: np.ndarray, labels: list[str], timestamp: float) -> None:
        inside = self.path.contains_points(anchors(boxes)) if len(boxes) else np.zeros(0, dtype=bool)
        self.occupancy = Counter(label for label, hit in zip(labels, inside) if hit)
        self.inside = [int(t) for t, hit in zip(ids.tolist(), inside) if hit]
        self.max_occupancy = max(self.max_occupancy, len(self.inside))
        seen = set(ids.tolist())
        for track, label in ((t, lab) for t, lab, hit in zip(ids.tolist(), labels, inside) if hit):
            if track not in self.frames_inside:
                self.entered[label] += 1
                self.dwell[track] = 0.0
                self.frames_inside[track] = 0
            elif track in self.last_inside:
                self.dwell[track] += timestamp - self.last_inside[track]
            self.frames_inside[track] += 1
            self.last_inside[track] = timestamp
        for track in [t for t in self.last_inside if t in seen and t not in self.inside]:
            del self.last_inside[track]  # seen outside: the next stay starts afresh

    def state(self) -> dict:
        return {"occupancy": dict(self.occupancy), "total": len(self.inside),
                "tracks": [{"track_id": t, "dwell_s": round(self.dwell[t], 3)} for t in self.inside]}


class Counting:
    """The lines and zones of a run, in pixels of a ``width`` x ``height`` source; ``update`` per frame with
    the tracked detections, ``state()`` for the frame's record, ``totals()`` for the summary."""

    def __init__(self, lines: list[Region], zones: list[Region], width: int, height: int, forget_after: int = 30):
        self.regions = {"lines": lines, "zones": zones}
        self.lines = [LineCounter(line.pixels(width, height)) for line in lines]
        self.zones = [ZoneCounter(zone.pixels(width, height)) for zone in zones]
        self.line_points = [line.pixels(width, height) for line in lines]
        self.zone_points = [zone.pixels(width, height) for zone in zones]
        self.forget_after = forget_after

    def __bool__(self) -> bool:
        return bool(self.lines or self.zones)

    def update(self, ids: np.ndarray, boxes: np.ndarray, labels: list[str], frame: int, timestamp: float) -> None:
        for line in self.lines:
            line.update(ids, boxes, labels, frame)
            line.forget(frame - self.forget_after)
        for zone in self.zones:
            zone.update(ids, boxes, labels, timestamp)

    def state(self) -> dict:
        return {"lines": [line.state() for line in self.lines], "zones": [zone.state() for zone in self.zones]}

    def dwell(self, track: int) -> list[float]:
        """Seconds the track spent in each zone."""
        return [round(zone.dwell.get(track, 0.0), 3) for zone in self.zones]

    def totals(self) -> dict:
        lines = [{"line": points.round(2).ravel().tolist(), "given": region.text, **line.state()}
                 for points, region, line in zip(self.line_points, self.regions["lines"], self.lines)]
        zones = []
        for points, region, zone in zip(self.zone_points, self.regions["zones"], self.zones):
            stays = list(zone.dwell.values())
            zones.append({"zone": points.round(2).ravel().tolist(), "given": region.text,
                          "entered": dict(zone.entered), "entered_total": sum(zone.entered.values()),
                          "max_occupancy": zone.max_occupancy,
                          "mean_dwell_s": round(float(np.mean(stays)), 3) if stays else 0.0})
        return {"lines": lines, "zones": zones}
