"""Tracking benchmark (issue 17), on generated videos - nothing to download: the demo's shapes moving over a
cluttered background, entering and leaving, crossing and occluding each other, changing speed
(``detzoo.tracking.sequences``: 4 videos of 400 frames, 320 x 320, 25 frames/s), with exact MOTChallenge ground
truth and the counts of a line and a zone. Metrics are TrackEval's (HOTA, MOTA, IDF1), over the videos taken
together (its combined sequences).

1. Ground-truth boxes as detections - a box moved by N(0, 2 px) per coordinate, then also 20 % of them dropped
   at random; the score falls with the visibility (0.95 whole, below high_score when under 40 % visible): detzoo's
   ByteTrack online (what each frame's JSON Lines show), offline (gaps of up to track.fill_gaps frames filled,
   what `detzoo eval` scores), and supervision's ByteTrack (0.30.9, the last release that has it) with the same
   thresholds; line counts exact (videos whose in/out counts per class equal the ground truth's) and zone
   occupancy exact (frames).
2. Tracker time per frame at 50 objects (1920 x 1080, ground-truth boxes with 2 px jitter): CPU time of the
   update calls in this process (numpy and scipy on one thread), detzoo vs supervision.
3. The demo's model (``detzoo demo`` -> runs/demo/run/best.pt, or --model) on the rendered videos: HOTA, IDF1,
   identity switches on shapes that never overlap another one, line counts.
4. End to end with that model: `detzoo predict VIDEO` (drawn MP4 + JSON Lines) with --track vs without, frames/s
   alternating, median of --repeats.

    python benchmarks/bench_track.py [--model runs/demo/run/best.pt] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the tracker's time on one core (numpy, scipy)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402 - after the thread settings, which numpy reads when it loads
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import replace  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import machine, print_table, shown  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from detzoo.common.config import TrackConfig  # noqa: E402
from detzoo.data.mot import MotRows  # noqa: E402
from detzoo.data.synthetic import SHAPES  # noqa: E402
from detzoo.evaluation.tracking import combined_metrics, tracking_metrics  # noqa: E402
from detzoo.models.selection import SelectOptions  # noqa: E402
from detzoo.predict import Predictor  # noqa: E402
from detzoo.predict.run import DEFAULT_SCORE  # noqa: E402
from detzoo.predict.sources import VideoSource  # noqa: E402
from detzoo.predict.tracking import track_source  # noqa: E402
from detzoo.predict.video import VideoPrediction  # noqa: E402
from detzoo.predict.video_io import VideoWriter  # noqa: E402
from detzoo.predict.video_run import run_video  # noqa: E402
from detzoo.tracking.bytetrack import ByteTracker, box_iou  # noqa: E402
from detzoo.tracking.counting import Counting, Region  # noqa: E402
from detzoo.tracking.gaps import fill_gaps  # noqa: E402
from detzoo.tracking.sequences import benchmark_sequences, generate_sequence  # noqa: E402

SETTINGS = TrackConfig()


class DetzooTracker:
    name = "detzoo ByteTrack"

    def __init__(self):
        self.tracker = ByteTracker(SETTINGS)

    def update(self, boxes, scores, frame):
        return self.tracker.update(boxes, scores, frame)


class SupervisionTracker:
    """supervision's ByteTrack with detzoo's thresholds (high 0.5, births from 0.6 as ByteTrack's, IoU 0.2,
    30 frames lost); ``update_with_detections`` returns the tracked detections, mapped back here by index."""

    name = "supervision 0.30.9 ByteTrack"

    def __init__(self):
        import supervision

        warnings.simplefilter("ignore")  # its ByteTrack is deprecated (removed in 0.31)
        self.sv = supervision
        self.tracker = supervision.ByteTrack(track_activation_threshold=SETTINGS.high_score,
                                             lost_track_buffer=SETTINGS.max_lost,
                                             minimum_matching_threshold=1 - SETTINGS.match_iou, frame_rate=30)

    def update(self, boxes, scores, frame):
        detections = self.sv.Detections(xyxy=boxes.astype(np.float32), confidence=scores.astype(np.float32),
                                         class_id=np.arange(len(boxes)))  # the class carries the index back
        out = self.tracker.update_with_detections(detections)
        ids = np.full(len(boxes), -1)
        ids[out.class_id] = out.tracker_id
        return ids


def run_tracker(make, frames, labels=None, sequence=None):
    """(MOT rows, CPU seconds per frame, the line's counts or None)."""
    tracker = make()
    counting = None
    if sequence is not None:
        counting = Counting([Region("line", sequence.line, "")], [Region("zone", tuple(np.ravel(sequence.zone)), "")],
                            sequence.width, sequence.height)
    rows, spent, occupancy = [], 0.0, []
    for index, (boxes, scores, gt_rows) in enumerate(frames):
        clock = time.process_time()
        ids = tracker.update(boxes, scores, index)
        spent += time.process_time() - clock
        keep = ids >= 0
        rows += [(index + 1, i, b, s) for i, b, s in zip(ids[keep], boxes[keep], scores[keep])]
        if counting is not None:
            counting.update(ids[keep], boxes[keep], [labels[r] for r in gt_rows[keep]], index, index / sequence.fps)
            occupancy.append(counting.zones[0].state()["total"])
    return to_rows(rows), spent / len(frames), counting, occupancy


def to_rows(found) -> MotRows:
    if not found:
        return MotRows.empty()
    boxes = np.array([f[2] for f in found], dtype=float)
    boxes[:, 2:] -= boxes[:, :2]
    return MotRows(np.array([f[0] for f in found]), np.array([f[1] for f in found]), boxes,
                   np.array([f[3] for f in found]), np.full(len(found), -1), np.ones(len(found)))


def counts_exact(sequence, counting) -> bool:
    truth, mine = sequence.truth_counts()["line"], counting.state()["lines"][0]
    return (truth["in"], truth["out"]) == (mine["in"], mine["out"])


def ground_truth_table(sequences) -> list[list]:
    rows = []
    for drop in (0.0, 0.2):
        detections = {s.name: s.detections(2.0, drop, s.seed) for s in sequences}
        for make, fill in ((DetzooTracker, 0), (DetzooTracker, SETTINGS.fill_gaps), (SupervisionTracker, 0)):
            results, times, exact, occupancy_exact, frames = [], [], 0, 0, 0
            for s in sequences:
                labels = [SHAPES[c - 1] for c in s.ground_truth().classes]
                found, per_frame, counting, occupancy = run_tracker(make, detections[s.name], labels, s)
                results.append(tracking_metrics(s.ground_truth(), fill_gaps(found, fill), s.frames))
                times.append(per_frame)
                exact += counts_exact(s, counting)
                occupancy_exact += int(np.sum(np.array(occupancy) == s.truth_counts()["zone_occupancy"]))
                frames += s.frames
            m = combined_metrics(results).metrics
            mode = "offline (gaps filled)" if fill else "online"
            rows.append([f"2 px jitter{', 20 % dropped' if drop else ''}", f"{make.name}, {mode}",
                         100 * m["HOTA"], 100 * m["DetA"], 100 * m["AssA"], 100 * m["MOTA"], 100 * m["IDF1"],
                         int(m["IDSW"]), f"{exact}/{len(sequences)}", f"{100 * occupancy_exact / frames:.1f} %",
                         f"{1000 * statistics.mean(times):.3f}"])
    return rows


def speed_table() -> list[list]:
    sequence = generate_sequence("fifty", 1920, 1080, ARGS.speed_frames, objects=50, seed=7, radius=(0.02, 0.04))
    frames = sequence.detections(2.0, 0.0, 7)
    boxes = np.mean([len(f[0]) for f in frames])
    rows = []
    timed = {}
    for make in (DetzooTracker, SupervisionTracker):
        samples = [run_tracker(make, frames)[1] for _ in range(ARGS.repeats)]
        timed[make.name] = min(samples)
        result = tracking_metrics(sequence.ground_truth(), run_tracker(make, frames)[0], sequence.frames).metrics
        rows.append([make.name, f"{boxes:.1f}", f"{1000 * timed[make.name]:.3f}", 100 * result["IDF1"],
                     int(result["IDSW"])])
    ratio = timed[SupervisionTracker.name] / timed[DetzooTracker.name]
    for row in rows:
        row.append(f"{timed[SupervisionTracker.name] / timed[row[0]]:.1f}x" if row[0] != SupervisionTracker.name
                   else "1.0x")
    return rows, ratio


def write_video(sequence, path: Path) -> Path:
    writer = VideoWriter(path, sequence.width, sequence.height, Fraction(sequence.fps))
    for index, rgb in enumerate(sequence.rgb_frames()):
        writer.write(rgb, index / sequence.fps)
    writer.close()
    return path


def never_overlapping(gt: MotRows) -> set[int]:
    """Ground-truth ids whose box never overlaps another object's box in any frame."""
    touching = set()
    for frame in np.unique(gt.frames):
        rows = gt.in_frame(frame)
        boxes = gt.boxes[rows].copy()
        boxes[:, 2:] += boxes[:, :2]
        iou = box_iou(boxes, boxes)
        np.fill_diagonal(iou, 0)
        touching |= set(gt.ids[rows][(iou > 0).any(axis=1)].tolist())
    return set(gt.ids.tolist()) - touching


def switches_on(gt: MotRows, found: MotRows, ids: set[int]) -> int:
    """CLEAR's identity switches counted on the given ground-truth ids only: per frame, ground truth and tracks
    are matched at IoU >= 0.5 (optimal assignment); a switch is a matched track id that differs from the
    previous one matched to the same object."""
    last: dict[int, int] = {}
    switches = 0
    for frame in np.unique(gt.frames):
        g, r = gt.in_frame(frame), found.in_frame(frame)
        g = g[gt.flags[g] > 0]
        if not len(g) or not len(r):
            continue
        a, b = gt.boxes[g].copy(), found.boxes[r].copy()
        a[:, 2:] += a[:, :2]
        b[:, 2:] += b[:, :2]
        iou = box_iou(a, b)
        rows, cols = linear_sum_assignment(-iou)
        for i, j in zip(rows, cols):
            if iou[i, j] < 0.5:
                continue
            obj, track = int(gt.ids[g][i]), int(found.ids[r][j])
            if obj in ids and obj in last and last[obj] != track:
                switches += 1
            last[obj] = track
    return switches


def model_tables(sequences, folder: Path, quality_table: bool = True,
                 speed_table: bool = True) -> tuple[list[list], list[list]] | None:
    model = Path(ARGS.model)
    if not model.exists():
        print(f"\n(no model at {shown(model)}: run `detzoo demo` for runs/demo/run/best.pt, or pass --model)")
        return None
    predictor = Predictor.from_file(model, device="cpu", batch_size=8)
    videos = {s.name: write_video(s, folder / f"{s.name}.mp4") for s in (sequences if quality_table else sequences[:1])}
    quality = model_quality(predictor, model, sequences, videos) if quality_table else []
    return quality, (model_speed(predictor, videos[sequences[0].name], folder) if speed_table else [])


def model_tracker(predictor) -> TrackConfig:
    """The checkpoint's tracker settings with ``--track key=value`` applied (e.g. ``high_score=0.3`` for a
    briefly trained focal-loss model whose scores seldom reach the default 0.5)."""
    base = predictor.tracking or TrackConfig()
    changes = {key: type(getattr(base, key))(value) for key, value in (item.split("=", 1) for item in ARGS.track)}
    return replace(base, **changes)


def model_quality(predictor, model: Path, sequences, videos) -> list[list]:
    results = {"online": [], "offline (gaps filled)": []}
    exact, lonely, lonely_switches = 0, 0, 0
    for s in sequences:
        tracking = predictor.track(str(videos[s.name]), tracker=model_tracker(predictor),
                                   lines=[",".join(map(str, s.line))], keep_rows=True)
        for _ in tracking:
            pass
        online = tracking.mot_rows()
        results["online"].append(tracking_metrics(s.ground_truth(), online, s.frames))
        results["offline (gaps filled)"].append(tracking_metrics(s.ground_truth(), tracking.mot_rows(
            tracking.settings.fill_gaps), s.frames))
        exact += counts_exact(s, tracking.counting)
        apart = never_overlapping(s.ground_truth())
        lonely += len(apart)
        lonely_switches += switches_on(s.ground_truth(), online, apart)
    quality = []
    for mode, runs in results.items():
        m = combined_metrics(runs).metrics
        quality.append([f"{model.name} ({mode})", 100 * m["HOTA"], 100 * m["DetA"], 100 * m["AssA"], 100 * m["MOTA"],
                        100 * m["IDF1"], int(m["IDSW"]), f"{lonely_switches} on {lonely}",
                        f"{exact}/{len(sequences)}"])
    return quality


def model_speed(predictor, video: Path, folder: Path) -> list[list]:
    source = VideoSource(str(video), video.stem, live=False, reconnect=False)
    predictor.predict_images([torch.zeros(3, 320, 320, dtype=torch.uint8)] * 8)  # warm up
    plain, tracked = [], []
    plain_options = SelectOptions(score_threshold=DEFAULT_SCORE)  # what `detzoo predict` selects by default
    for _ in range(ARGS.repeats):  # alternating: load from other processes falls on both alike
        summary = run_video(VideoPrediction(predictor, source, plain_options), folder / "plain")
        plain.append(summary.frames / summary.seconds)
        summary = run_video(track_source(predictor, source), folder / "tracked")
        tracked.append(summary.frames / summary.seconds)
        track_ms = summary.per_frame_ms["track"]
    return [[video.name, statistics.median(plain), statistics.median(tracked),
             statistics.median(tracked) / statistics.median(plain), f"{track_ms:.2f}"]]


def main() -> None:
    print(f"machine: {machine()}")
    sequences = benchmark_sequences(ARGS.sequences, ARGS.frames)
    boxes = sum(int((s.ground_truth().flags > 0).sum()) for s in sequences)
    crossings = sum(s.truth_counts()["line"]["in_total"] + s.truth_counts()["line"]["out_total"] for s in sequences)
    print(f"{len(sequences)} generated videos x {ARGS.frames} frames, 320 x 320: {sum(len(s.shapes) for s in sequences)} "
          f"shapes, {boxes} ground-truth boxes to find (flag 1), {crossings} line crossings")
    if 1 in ARGS.tables:
        print_table("1. ground-truth boxes as detections (TrackEval, the videos combined; tracker CPU ms per frame)",
                    ["detections", "tracker", "HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "line counts exact",
                     "zone occupancy exact", "ms/frame"], ground_truth_table(sequences))
    if 2 in ARGS.tables:
        rows, ratio = speed_table()
        print_table(f"2. tracker time per frame at 50 objects (1920 x 1080, {ARGS.speed_frames} frames, 2 px jitter; "
                    f"CPU time on one thread, best of {ARGS.repeats})",
                    ["tracker", "boxes/frame", "ms/frame", "IDF1", "IDSW", "speed vs supervision"], rows)
        print(f"goal: <= 1 ms per frame at 50 objects: {float(rows[0][2]):.3f} ms ({ratio:.1f}x less than "
              "supervision's)")
    if {3, 4} & set(ARGS.tables):
        with tempfile.TemporaryDirectory(prefix="bench-track-") as tmp:
            tables = model_tables(sequences, Path(tmp), 3 in ARGS.tables, 4 in ARGS.tables)
        if tables is not None:
            quality, speed = tables
            if quality:
                print_table("3. the demo's model on the rendered videos (TrackEval, combined; switches on shapes "
                            "that never overlap another)", ["model", "HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW",
                                                            "switches (never overlapping)", "line counts exact"],
                            quality)
            if speed:
                print_table(f"4. end to end, `detzoo predict` (drawn MP4 + JSON Lines; detection alone at predict's "
                            f"default score {DEFAULT_SCORE}), median of {ARGS.repeats}, alternating",
                            ["video", "detection fps", "with --track fps", "ratio", "track ms/frame"], speed)
    print("\ngoals (issue 17): IDF1 >= 0.95 with 2 px jitter, >= 0.85 with 20 % dropped and line counts exact with "
          "ground-truth boxes (table 1); <= 1 ms per frame at 50 objects (table 2); no switch on shapes that never "
          "overlap (table 3); end to end within 5 % of detection alone (table 4)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/run/best.pt")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--speed-frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4], help="which tables to measure")
    parser.add_argument("--track", nargs="*", default=[], metavar="KEY=VALUE",
                        help="tracker settings for table 3 (track.*, e.g. high_score=0.3)")
    ARGS = parser.parse_args()
    main()
