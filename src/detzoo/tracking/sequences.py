"""Generated videos with ground-truth tracks, for tracking tests and ``benchmarks/bench_track.py``: the demo's
shapes (``synthetic.py``: circle, square, triangle, star, with their colours and outlines) move over a static
cluttered background. They enter from the edges and leave through them, cross and occlude each other (a depth
order draws the nearer one over the farther), and change speed and heading now and then.

The truth is exact: each shape's centre per frame, its box (clipped to the frame) and its visibility (the share
of its pixels neither covered by a nearer shape nor outside the frame, counted on a z-buffer of the same
shapes). It is written as MOTChallenge ``gt.txt`` (``data/mot.py``) - a shape less than ``MIN_VISIBLE``
visible has flag 0 (not required: no detector can see it) - with the counts a line and a zone should give,
computed from the centres of the ground-truth boxes: crossings of the line in each direction (once per shape
and direction, the rule of ``tracking/counting.py``) and how many shapes are in the zone in every frame.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..common.files import write_json, write_text
from ..data.mot import MotRows, write_mot
from ..data.synthetic import SHAPES, _background, _shape_points
from .counting import Counting, Region

MIN_VISIBLE = 0.25  # ground-truth boxes less visible than this have flag 0
EDGES = (0.35, 0.35, 0.15, 0.15)  # where new shapes enter: left, right, top, bottom (mostly across the line)
LINE = (0.5, 1.0, 0.5, 0.0)  # fractions of the frame: a vertical line drawn upwards, "in" = to the right
ZONE = ((0.08, 0.6), (0.42, 0.55), (0.46, 0.92), (0.12, 0.9))  # fractions: a quadrilateral, lower left


@dataclass
class MovingShape:
    id: int  # ground-truth id, from 1
    kind: int  # index into SHAPES (the class)
    first: int  # first frame (from 0)
    centres: np.ndarray  # [F, 2] centre in pixels, one row per frame from `first`
    radius: float
    rotation: float
    squash: float  # circles: height / width of the ellipse
    colour: tuple[int, int, int]
    depth: float  # drawing order: larger is nearer (drawn over the others)

    def outline(self, cx: float, cy: float) -> list[tuple[float, float]] | list[float]:
        """Polygon points, or an ellipse's [x0, y0, x1, y1] for a circle."""
        if SHAPES[self.kind] == "circle":
            ry = self.radius * self.squash
            return [cx - self.radius, cy - ry, cx + self.radius, cy + ry]
        return _shape_points(SHAPES[self.kind], cx, cy, self.radius, self.rotation)

    def box(self, cx: float, cy: float) -> np.ndarray:
        """The unclipped xyxy box at this centre."""
        shape = self.outline(cx, cy)
        if SHAPES[self.kind] == "circle":
            return np.asarray(shape, dtype=float)
        points = np.asarray(shape)
        return np.concatenate([points.min(axis=0), points.max(axis=0)])

    def draw(self, canvas: ImageDraw.ImageDraw, cx: float, cy: float, fill, outline=None, width: int = 0) -> None:
        shape = self.outline(cx, cy)
        if SHAPES[self.kind] == "circle":
            canvas.ellipse(shape, fill=fill, outline=outline, width=width)
        else:
            canvas.polygon(shape, fill=fill, outline=outline, width=width)


@dataclass
class ShapeSequence:
    """One generated video: its shapes, size and rate, and the line and zone (fractions of the frame)."""

    name: str
    width: int
    height: int
    frames: int
    fps: int
    shapes: list[MovingShape]
    seed: int
    line: tuple[float, float, float, float] = LINE
    zone: tuple[tuple[float, float], ...] = ZONE
    _truth: dict = field(default_factory=dict, repr=False)

    def present(self, frame: int) -> list[MovingShape]:
        return [s for s in self.shapes if s.first <= frame < s.first + len(s.centres)]

    def ground_truth(self) -> MotRows:
        """Every shape with a box inside the frame, with its visibility (cached)."""
        if "gt" not in self._truth:
            self._truth["gt"] = self._ground_truth()
        return self._truth["gt"]

    def _ground_truth(self) -> MotRows:
        areas = {s.id: _full_area(s) for s in self.shapes}
        columns: list[list] = [[] for _ in range(6)]
        for frame in range(self.frames):
            shapes = sorted(self.present(frame), key=lambda s: s.depth)  # far first, near drawn last
            labels = Image.new("L", (self.width, self.height), 0)
            canvas = ImageDraw.Draw(labels)
            for number, shape in enumerate(shapes, start=1):
                shape.draw(canvas, *shape.centres[frame - shape.first], fill=number)
            visible = np.bincount(np.asarray(labels).ravel(), minlength=len(shapes) + 1)
            for number, shape in enumerate(shapes, start=1):
                box = shape.box(*shape.centres[frame - shape.first])
                x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
                x2, y2 = min(box[2], float(self.width)), min(box[3], float(self.height))
                if x2 - x1 < 1 or y2 - y1 < 1:
                    continue
                visibility = min(1.0, visible[number] / areas[shape.id])
                for column, value in zip(columns, (frame + 1, shape.id, [x1, y1, x2 - x1, y2 - y1],
                                                   float(visibility >= MIN_VISIBLE), shape.kind + 1, visibility)):
                    column.append(value)
        frames, ids, boxes, flags, classes, visibility = columns
        return MotRows(np.asarray(frames, np.int64), np.asarray(ids, np.int64), np.asarray(boxes, float).reshape(-1, 4),
                       np.asarray(flags, float), np.asarray(classes, np.int64), np.asarray(visibility, float))

    def truth_counts(self) -> dict:
        """What ``counting.Counting`` gives on the exact ground truth (boxes with flag 1, true ids and classes):
        the line's totals and the zone's occupancy in every frame (cached)."""
        if "counts" not in self._truth:
            gt = self.ground_truth()
            line = Region("line", tuple(self.line), ",".join(map(str, self.line)))
            zone = Region("zone", tuple(v for point in self.zone for v in point), "")
            counting = Counting([line], [zone], self.width, self.height)
            occupancy = []
            for frame in range(1, self.frames + 1):
                rows = gt.in_frame(frame)
                rows = rows[gt.flags[rows] > 0]
                boxes = gt.boxes[rows].copy()
                boxes[:, 2:] += boxes[:, :2]
                counting.update(gt.ids[rows], boxes, [SHAPES[c - 1] for c in gt.classes[rows]], frame - 1,
                                (frame - 1) / self.fps)
                occupancy.append(counting.zones[0].state()["total"])
            totals = counting.totals()
            self._truth["counts"] = {"line": totals["lines"][0], "zone": totals["zones"][0],
                                     "zone_occupancy": occupancy}
        return self._truth["counts"]

    def detections(self, jitter: float = 2.0, drop: float = 0.0, seed: int = 0) -> list[tuple]:
        """Per frame (boxes xyxy, scores, ground-truth row indices): the boxes a detector could see (visibility
        >= MIN_VISIBLE) moved by N(0, ``jitter``) px per coordinate, a share ``drop`` missing at random, scored
        0.2 + 0.75 x visibility (0.95 whole; below ByteTrack's high score 0.5 when less than 40 % visible, as an
        occluded object's score drops)."""
        rng = np.random.default_rng(seed)
        gt = self.ground_truth()
        frames = []
        for frame in range(1, self.frames + 1):
            rows = gt.in_frame(frame)
            rows = rows[gt.visibility[rows] >= MIN_VISIBLE]
            rows = rows[rng.random(len(rows)) >= drop]
            boxes = gt.boxes[rows].copy()
            boxes[:, 2:] += boxes[:, :2]
            frames.append((boxes + rng.normal(0, jitter, boxes.shape), 0.2 + 0.75 * gt.visibility[rows], rows))
        return frames

    def rgb_frames(self) -> Iterator[np.ndarray]:
        """The video, frame by frame (uint8 [H, W, 3]): the background with a little noise per frame, the shapes
        drawn far to near with the demo dataset's filled look and inverted outline."""
        rng = np.random.default_rng(self.seed + 1000)
        side = max(self.width, self.height)
        background = np.asarray(_background(rng, side))[: self.height, : self.width]
        for frame in range(self.frames):
            noisy = background.astype(np.int16) + rng.normal(0, 3, background.shape).astype(np.int16)
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
            canvas = ImageDraw.Draw(image)
            for shape in sorted(self.present(frame), key=lambda s: s.depth):
                outline = tuple(255 - v for v in shape.colour)
                shape.draw(canvas, *shape.centres[frame - shape.first], fill=shape.colour, outline=outline, width=2)
            yield np.asarray(image)

    def write(self, folder: str | Path, images: bool = False) -> Path:
        """MOTChallenge layout under ``folder/<name>``: ``gt/gt.txt``, ``seqinfo.ini``, ``counts.json`` (line
        counts and zone occupancy, with the line and zone in pixels), and with ``images`` the frames as
        ``img1/000001.jpg``... Returns the sequence folder."""
        root = Path(folder) / self.name
        write_mot(self.ground_truth(), root / "gt" / "gt.txt", ground_truth=True)
        info = configparser.ConfigParser()
        info.optionxform = str
        info["Sequence"] = {"name": self.name, "imDir": "img1", "frameRate": str(self.fps),
                            "seqLength": str(self.frames), "imWidth": str(self.width), "imHeight": str(self.height),
                            "imExt": ".jpg"}
        lines = []
        info.write(_Collect(lines), space_around_delimiters=False)
        write_text(root / "seqinfo.ini", "".join(lines))
        write_json(self.truth_counts(), root / "counts.json")
        if images:
            (root / "img1").mkdir(parents=True, exist_ok=True)
            for index, rgb in enumerate(self.rgb_frames(), start=1):
                Image.fromarray(rgb).save(root / "img1" / f"{index:06d}.jpg", quality=92)
        return root


class _Collect:
    """A file-like list for ConfigParser.write (the text then goes through the atomic writer)."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)


def _full_area(shape: MovingShape) -> int:
    """Pixels of the shape drawn alone, whole (the denominator of its visibility)."""
    box = shape.box(0.0, 0.0)
    size = (int(math.ceil(box[2] - box[0])) + 4, int(math.ceil(box[3] - box[1])) + 4)
    mask = Image.new("L", size, 0)
    shape.draw(ImageDraw.Draw(mask), -box[0] + 2, -box[1] + 2, fill=1)
    return max(1, int(np.asarray(mask).sum()))


def generate_sequence(name: str = "shapes", width: int = 320, height: int = 320, frames: int = 300,
                      objects: int = 5, seed: int = 0, fps: int = 25, radius: tuple[float, float] = (0.1, 0.16),
                      speed: tuple[float, float] = (0.005, 0.014), turn_every: float = 50.0) -> ShapeSequence:
    """``objects`` shapes at any time (placed inside the frame at the start, then entering from the edges as
    others leave, mostly from the left and right, ``EDGES``); ``radius`` and ``speed`` (per frame) are fractions of the frame's shorter side; about every
    ``turn_every`` frames a shape changes speed (x 0.5 to 2) and heading (up to 30 degrees)."""
    rng = np.random.default_rng(seed)
    side = min(width, height)
    shapes: list[MovingShape] = []
    moving: list[dict] = []  # shapes on screen: their list of centres, velocity, state

    def new_shape(centre: np.ndarray, heading: float, first: int) -> None:
        kind = int(rng.integers(len(SHAPES)))
        shape = MovingShape(len(shapes) + 1, kind, first, np.zeros((0, 2)), float(rng.uniform(*radius) * side),
                            float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.8, 1.0)),
                            tuple(int(v) for v in rng.uniform(0, 255, 3)), float(rng.random()))
        shapes.append(shape)
        velocity = rng.uniform(*speed) * side * np.array([math.cos(heading), math.sin(heading)])
        moving.append({"shape": shape, "centres": [centre.astype(float)], "velocity": velocity,
                       "entered": _inside(shape, centre, width, height)})

    for _ in range(objects):
        centre = rng.uniform([0.15 * width, 0.15 * height], [0.85 * width, 0.85 * height])
        new_shape(centre, rng.uniform(0, 2 * math.pi), 0)
    for frame in range(1, frames):
        for state in moving:
            if rng.random() < 1.0 / turn_every:
                turn = math.radians(rng.uniform(-30, 30))
                rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
                faster = rng.uniform(0.5, 2.0)
                new_speed = np.clip(np.linalg.norm(state["velocity"]) * faster, 0.5 * speed[0] * side,
                                    2 * speed[1] * side)
                heading = rotation @ state["velocity"]
                state["velocity"] = heading / np.linalg.norm(heading) * new_speed
            state["centres"].append(state["centres"][-1] + state["velocity"])
        kept = []
        for state in moving:
            inside = _inside(state["shape"], state["centres"][-1], width, height)
            state["entered"] |= inside
            if state["entered"] and not inside:  # left the frame: its last centre is outside, drop it
                state["centres"].pop()
                state["shape"].centres = np.asarray(state["centres"])
            else:
                kept.append(state)
        moving = kept
        for _ in range(rng.binomial(max(0, objects - len(moving)), 0.2)):
            edge = int(rng.choice(4, p=EDGES))
            along = rng.uniform(0.1, 0.9)
            r = radius[1] * side
            centre, inward = [(np.array([-r, along * height]), 0.0), (np.array([width + r, along * height]), math.pi),
                              (np.array([along * width, -r]), math.pi / 2),
                              (np.array([along * width, height + r]), -math.pi / 2)][edge]
            new_shape(centre, inward + math.radians(rng.uniform(-40, 40)), frame)
    for state in moving:
        state["shape"].centres = np.asarray(state["centres"])
    shapes = [s for s in shapes if len(s.centres)]
    return ShapeSequence(name, width, height, frames, fps, shapes, seed)


def _inside(shape: MovingShape, centre: np.ndarray, width: int, height: int) -> bool:
    """Whether any part of the shape's box is inside the frame."""
    box = shape.box(*centre)
    return box[2] > 0 and box[0] < width and box[3] > 0 and box[1] < height


def benchmark_sequences(count: int = 4, frames: int = 400) -> list[ShapeSequence]:
    """The 320 x 320 videos of ``benchmarks/bench_track.py`` and the tracking tests (5 shapes at a time, 25
    frames/s, seeds 0 .. count - 1)."""
    return [generate_sequence(f"shapes-{seed}", frames=frames, seed=seed) for seed in range(count)]


