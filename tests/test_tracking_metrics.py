"""Tracking metrics (issue 17): MOTChallenge files read with one-line errors naming the file and line, and
detzoo's HOTA / MOTA / IDF1 equal to what TrackEval's own evaluator (``trackeval.Evaluator`` with its
``MotChallenge2DBox`` dataset) reports on the same gt.txt and results files, per sequence and combined."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from detzoo.common.errors import DataError
from detzoo.data.mot import MotRows, read_mot, write_mot
from detzoo.evaluation.tracking import SUMMARY, combined_metrics, tracking_metrics
from detzoo.tracking.gaps import fill_gaps
from detzoo.tracking.sequences import benchmark_sequences
from tracking_helpers import track_rows

GOOD = "1,1,10,20,30,40,1,1,1.0\n"


@pytest.mark.parametrize("rows, message", [
    ("1,1,10,20,30,40\n", r"line 1: expected at least 7 values \(frame, id, left, top, width, height, flag"),
    (GOOD + "2,1,10,abc,30,40,1,1,1\n", "line 2: column 4 'abc' is not a number"),
    (GOOD + "\n0,2,10,20,30,40,1,1,1\n", "line 3: the frame must be a whole number from 1, got 0"),
    (GOOD + "1.5,2,10,20,30,40,1,1,1\n", "line 2: the frame must be a whole number from 1, got 1.5"),
    (GOOD + "1,-3,10,20,30,40,1,1,1\n", "line 2: the id must be a whole number from 0, got -3"),
    (GOOD + "2,2,10,20,0,40,1,1,1\n", "line 2: the box must have a positive width and height, got 0 x 40"),
    (GOOD + "2,1,1,1,5,5,1,1,1\n1,1,0,0,5,5,1,1,1\n", "line 3: id 1 appears twice in frame 1 \\(also line 1\\)"),
    (GOOD + "2,1,nan,1,5,5,1,1,1\n", "line 2: column 3 is nan"),
])
def test_a_malformed_gt_file_is_one_line_naming_file_and_line(tmp_path, rows, message):
    path = tmp_path / "gt.txt"
    path.write_text(rows)
    with pytest.raises(DataError, match=message) as error:
        read_mot(path)
    assert str(error.value).startswith(f"{path} line ") and "\n" not in str(error.value)


def test_files_round_trip(tmp_path):
    rows = MotRows(np.array([2, 1]), np.array([7, 3]), np.array([[1.5, 2, 3, 4], [5, 6, 7, 8]]), np.array([0.5, 0.9]),
                   np.array([-1, -1]), np.ones(2))
    back = read_mot(write_mot(rows, tmp_path / "r.txt"), ground_truth=False)
    assert back.frames.tolist() == [1, 2] and back.ids.tolist() == [3, 7]  # sorted by frame, then id
    np.testing.assert_allclose(back.boxes, [[5, 6, 7, 8], [1.5, 2, 3, 4]])
    assert (tmp_path / "r.txt").read_text().splitlines()[0] == "1,3,5.00,6.00,7.00,8.00,0.90000,-1,-1,-1"


def test_a_hand_computed_identity_switch():
    """Two objects far apart for 4 frames; the tracker gives B a new id from frame 3: IDF1 = 2 x 6 / (2 x 6 + 2
    + 2) = 0.75 (A-1 matched 4 times, B-2 twice; 2 boxes of B and 2 of id 3 unmatched), MOTA = 1 - 1 / 8."""
    box_a, box_b = [0, 0, 10, 10], [100, 100, 10, 10]
    gt = MotRows(np.repeat([1, 2, 3, 4], 2), np.tile([1, 2], 4), np.array([box_a, box_b] * 4, float), np.ones(8),
                 np.ones(8, int), np.ones(8))
    results = MotRows(gt.frames, np.array([1, 2, 1, 2, 1, 3, 1, 3]), gt.boxes, np.ones(8), -np.ones(8, int),
                      np.ones(8))
    metrics = tracking_metrics(gt, results, 4).metrics
    assert metrics["IDF1"] == pytest.approx(0.75) and metrics["MOTA"] == pytest.approx(0.875)
    assert metrics["IDSW"] == 1 and metrics["FP"] == 0 and metrics["FN"] == 0


def _trackeval_on_files(root, sequences: dict[str, int]) -> dict:
    """TrackEval's evaluator as a user runs it: gt under ROOT/gt/<seq>/gt/gt.txt, results under
    ROOT/trackers/detzoo/data/<seq>.txt, MOTChallenge 2D boxes without the MOT17 pedestrian preprocessing."""
    import trackeval

    evaluator = trackeval.Evaluator({"USE_PARALLEL": False, "BREAK_ON_ERROR": True, "LOG_ON_ERROR": None,
                                     "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                                     "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False})
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"), "TRACKERS_TO_EVAL": ["detzoo"],
        "SEQ_INFO": sequences, "SKIP_SPLIT_FOL": True, "DO_PREPROC": False, "PRINT_CONFIG": False})
    quiet = {"PRINT_CONFIG": False}
    metrics = [trackeval.metrics.HOTA(quiet), trackeval.metrics.CLEAR(quiet), trackeval.metrics.Identity(quiet)]
    with contextlib.redirect_stdout(io.StringIO()):
        results, _ = evaluator.evaluate([dataset], metrics)
    return results["MotChallenge2DBox"]["detzoo"]


def _summary(res: dict) -> dict[str, float]:
    hota, clear, identity = res["HOTA"], res["CLEAR"], res["Identity"]
    return {"HOTA": np.mean(hota["HOTA"]), "DetA": np.mean(hota["DetA"]), "AssA": np.mean(hota["AssA"]),
            "MOTA": clear["MOTA"], "MOTP": clear["MOTP"], "IDF1": identity["IDF1"], "IDP": identity["IDP"],
            "IDR": identity["IDR"], "IDSW": clear["IDSW"], "FP": clear["CLR_FP"], "FN": clear["CLR_FN"],
            "Frag": clear["Frag"], "MT": clear["MT"], "ML": clear["ML"]}


def test_the_numbers_are_trackevals_on_the_same_files(tmp_path):
    """Tracker results with misses, drops and a few switches (20 % of the boxes dropped, no gap filling for
    two sequences, filled for one), written and read back: every summary number equals TrackEval's evaluator
    on the same files to float64 rounding (the same code on the same arrays; summing in another order could
    change the last bits)."""
    ours, lengths = {}, {}
    for sequence, fill in zip(benchmark_sequences(count=3, frames=200), (0, 20, 0)):
        gt_path = write_mot(sequence.ground_truth(), tmp_path / "gt" / sequence.name / "gt" / "gt.txt",
                            ground_truth=True)
        rows = fill_gaps(track_rows(sequence.detections(3.0, 0.2, sequence.seed)), fill)
        results_path = write_mot(rows, tmp_path / "trackers" / "detzoo" / "data" / f"{sequence.name}.txt")
        ours[sequence.name] = tracking_metrics(read_mot(gt_path), read_mot(results_path, ground_truth=False),
                                               sequence.frames)
        lengths[sequence.name] = sequence.frames
    theirs = _trackeval_on_files(tmp_path, lengths)
    for name, result in {**ours, "COMBINED_SEQ": combined_metrics(list(ours.values()))}.items():
        expected = _summary(theirs[name]["pedestrian"])
        assert set(result.metrics) == set(SUMMARY)
        for key in SUMMARY:
            assert result.metrics[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), (name, key)
    assert 0.5 < ours["shapes-0"].metrics["IDF1"] < 1  # not a trivial case
