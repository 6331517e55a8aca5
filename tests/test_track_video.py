"""Tracking on video (issue 17): ``Predictor.track`` on a generated video (a detector that returns the ground
truth stands in for a trained model, so identities and counts can be checked exactly), ``detzoo predict
--track`` with lines and zones (JSON Lines with track ids and counts, the MP4, tracks.json), image folders read
as a sequence, ``detzoo eval SOURCE --gt``, and bad lines, zones and ground truth as one line each."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from detzoo.cli import main
from detzoo.common.structures import Detections
from detzoo.data.mot import read_mot
from detzoo.data.synthetic import SHAPES
from detzoo.evaluation.tracking import tracking_metrics
from detzoo.predict import Predictor
from detzoo.predict.video_io import VideoWriter
from detzoo.tracking.sequences import generate_sequence
from detzoo.visualize import PALETTE, draw_tracking
from predict_helpers import SCORE, decode_all, tiny_checkpoint

LINE = "0.5,1,0.5,0"  # the generated videos' line, drawn upwards: "in" is to the right
ZONE = "0.08,0.6,0.42,0.55,0.46,0.92,0.12,0.9"


class GroundTruthPredictor(Predictor):
    """Returns each frame's ground-truth boxes (visible ones, score by visibility) in frame order: a perfect
    detector for the generated video, ``stride`` frames apart."""

    def __init__(self, sequence, stride: int = 1):
        super().__init__(backend=None, class_names=list(SHAPES))
        self.gt, self.next_frame, self.stride = sequence.ground_truth(), 1, stride

    def predict_images(self, images, options=None):
        found = []
        for _ in images:
            rows = self.gt.in_frame(self.next_frame)
            rows = rows[self.gt.flags[rows] > 0]
            boxes = torch.tensor(self.gt.boxes[rows], dtype=torch.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            found.append(Detections(boxes, torch.tensor(0.2 + 0.75 * self.gt.visibility[rows], dtype=torch.float32),
                                    torch.tensor(self.gt.classes[rows] - 1), self.class_names))
            self.next_frame += self.stride
        return found


@pytest.fixture(scope="module")
def sequence():
    return generate_sequence("walk", 320, 320, 120, objects=5, seed=3)


@pytest.fixture(scope="module")
def video(sequence, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    writer = VideoWriter(path, sequence.width, sequence.height, Fraction(sequence.fps))
    for index, rgb in enumerate(sequence.rgb_frames()):
        writer.write(rgb, index / sequence.fps)
    writer.close()
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A short sequence in the MOTChallenge layout: step/img1/000001.jpg ..., step/gt/gt.txt, step/seqinfo.ini
    (10 frames/s)."""
    short = generate_sequence("step", 160, 160, 24, objects=3, seed=5, fps=10)
    return short.write(tmp_path_factory.mktemp("mot"), images=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_track_gives_persistent_ids_and_exact_counts(sequence, video):
    tracking = GroundTruthPredictor(sequence).track(str(video), lines=[LINE], zones=[ZONE], keep_rows=True)
    frames = list(tracking)
    assert [f.index for f in frames] == list(range(sequence.frames))
    assert all(f.detections.track_ids is not None and len(f.detections.track_ids) == len(f.detections)
               for f in frames)
    result = tracking_metrics(sequence.ground_truth(), tracking.mot_rows(), sequence.frames)
    assert result.metrics["IDSW"] == 0 and result.metrics["IDF1"] > 0.95, result.metrics
    truth = sequence.truth_counts()
    assert frames[-1].counts["lines"][0] == {key: truth["line"][key] for key in ("in", "out", "in_total",
                                                                                 "out_total")}
    assert truth["line"]["in_total"] + truth["line"]["out_total"] > 0
    record = frames[10].record()
    assert all("track_id" in d for d in record["detections"]) and record["counts"]["zones"][0]["total"] >= 0


def test_skipped_frames_are_bridged_by_the_motion_model(sequence, video):
    """Every second frame (the frame indices go to the tracker: a gap of 2 is predicted over)."""
    tracking = GroundTruthPredictor(sequence, stride=2).track(str(video), vid_stride=2, keep_rows=True)
    indices = [frame.index for frame in tracking]
    assert indices == list(range(0, sequence.frames, 2))
    gt = sequence.ground_truth()
    odd = gt.frames % 2 == 1  # MOTChallenge frames from 1: frames 1, 3, 5 ... are indices 0, 2, 4 ...
    from detzoo.data.mot import MotRows

    seen = MotRows(gt.frames[odd], gt.ids[odd], gt.boxes[odd], gt.flags[odd], gt.classes[odd], gt.visibility[odd])
    result = tracking_metrics(seen, tracking.mot_rows(), sequence.frames)
    assert result.metrics["IDSW"] == 0 and result.metrics["IDF1"] > 0.9, result.metrics


def test_drawn_frames_use_the_track_colour_and_trail():
    image = np.zeros((100, 160, 3), np.uint8)
    det = Detections(torch.tensor([[20.0, 20.0, 60.0, 80.0]]), torch.tensor([0.9]), torch.tensor([0]), ["circle"],
                     track_ids=torch.tensor([7]))
    trail = {7: np.array([[100.0, 50.0], [80.0, 50.0], [40.0, 50.0]])}
    drawn = draw_tracking(image, det, trail, [(np.array([[150.0, 0.0], [150.0, 99.0]]), False, "line 1: in 0")])
    colour = [int(PALETTE[7][i: i + 2], 16) for i in (1, 3, 5)]
    assert drawn[50, 20].tolist() == colour  # the box's left edge: the track's colour, not the class's
    assert drawn[50, 90].tolist() == colour  # the trail
    assert drawn[90, 150].tolist() == [255, 255, 255]  # the counting line


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_track_writes_ids_counts_video_and_summary(checkpoint, video, sequence, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(video), "--track", "--line", LINE, "--zone", ZONE, "--out", str(out),
                 "--score", SCORE, "--max-det", "5", "--tracker", "high_score=0.006", "--tracker", "low_score=0.004",
                 "--tracker", "min_hits=1", "--frames", "0:24", "--workers", "0"]) == 0
    summary = capsys.readouterr().out
    assert "track(s), line 1: in" in summary and "track " in summary  # the tracker's ms per frame
    records = _lines(out / "walk.jsonl")
    assert [r["frame"] for r in records] == list(range(24))
    detections = [d for r in records for d in r["detections"]]
    assert detections and all(isinstance(d["track_id"], int) for d in detections)
    assert all(set(r["counts"]) == {"lines", "zones"} for r in records)
    frames, _, _ = decode_all(out / "walk.mp4")
    assert len(frames) == 24

    document = json.loads((out / "walk.tracks.json").read_text())
    assert document["lines"][0]["in_total"] == records[-1]["counts"]["lines"][0]["in_total"]
    assert document["tracker"]["high_score"] == 0.006 and len(document["zones"]) == 1
    by_track: dict[int, list] = {}
    for record in records:
        for d in record["detections"]:
            by_track.setdefault(d["track_id"], []).append((record["frame"], d))
    assert sorted(by_track) == [t["track_id"] for t in document["tracks"]]
    for track in document["tracks"]:
        seen = by_track[track["track_id"]]
        votes = Counter(d["label"] for _, d in seen)
        assert track["first_frame"] == seen[0][0] and track["last_frame"] == seen[-1][0]
        assert track["frames_seen"] == len(seen) and votes[track["label"]] == max(votes.values())
        # the summary averages the unrounded scores; the JSON Lines round each to 1e-5
        assert track["mean_score"] == pytest.approx(np.mean([d["score"] for _, d in seen]), abs=1e-5)
        assert len(track["zone_dwell_s"]) == 1


def test_an_image_folder_is_read_as_a_sequence(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(folder / "img1"), "--track", "--out", str(out), "--score", SCORE,
                 "--max-det", "3", "--workers", "0"]) == 0
    records = _lines(out / "step.jsonl")  # named after the sequence, not img1
    assert len(records) == 24 and records[1]["timestamp"] == pytest.approx(0.1)  # seqinfo.ini: 10 frames/s
    assert (out / "step.mp4").is_file() and (out / "step.tracks.json").is_file()


def test_eval_on_a_sequence_folder_reports_trackevals_numbers(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(checkpoint), str(folder), "--out", str(out), "--score", SCORE, "--tracker",
                 "high_score=0.006", "--tracker", "low_score=0.004"]) == 0
    printed = capsys.readouterr().out
    assert "HOTA" in printed and "IDF1" in printed and "MOTA" in printed
    document = json.loads((out / "step.metrics.json").read_text())
    again = tracking_metrics(read_mot(folder / "gt" / "gt.txt"), read_mot(out / "step.txt", ground_truth=False),
                             24)
    assert document["metrics"] == again.metrics and document["frames"] == 24


@pytest.mark.parametrize("args, message", [
    (["predict", "{missing}", "{video}", "--line", "10,20,30"], "--line 10,20,30: a line is 4 numbers"),
    (["predict", "{missing}", "{video}", "--zone", "0,0,100,100"], "--zone 0,0,100,100: a zone is a polygon of at "
                                                                  "least 3 points"),
    (["eval", "{missing}", "{video}", "--gt", "{bad}"], "{bad} line 2: column 3 'x' is not a number"),
])
def test_bad_lines_zones_and_ground_truth_are_one_line_before_the_model_loads(tmp_path, video, capsys, args,
                                                                              message):
    bad = tmp_path / "gt.txt"
    bad.write_text("1,1,10,20,30,40,1,1,1\n2,1,x,20,30,40,1,1,1\n")
    names = {"missing": str(tmp_path / "missing.pt"), "video": str(video), "bad": str(bad)}
    assert main([a.format(**names) for a in args]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and message.format(**names) in error  # not the missing model: checked first
