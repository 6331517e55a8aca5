"""Tracking metrics - HOTA (with DetA and AssA), MOTA (CLEAR MOT) and IDF1 - computed by TrackEval, the
MOTChallenge's own evaluation code, on MOTChallenge files (``data/mot.py``).

The data given to TrackEval's metric classes is what its ``MotChallenge2DBox`` dataset builds from the same
files with ``DO_PREPROC=False`` - the class-agnostic evaluation (every ground-truth box is an object to track,
whatever its class; the pedestrian-only filtering of MOT17 does not apply to other datasets): ground-truth
boxes with flag 0 are removed, IoU is TrackEval's own box IoU, ids are renumbered 0..n-1 per sequence. So the
numbers are those of TrackEval's evaluator on the same ``gt.txt`` and results file, which
``tests/test_tracking_metrics.py`` checks.

TrackEval (``pip install trackeval``) declares ``opencv-python`` as a requirement, which would install a second,
GUI build of ``cv2`` over the headless one detzoo uses (its GUI build needs libGL on a server); it is
installed with ``--no-deps`` (its other requirements - numpy, scipy, matplotlib, pycocotools - are detzoo's).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

from ..common.errors import ConfigError, DataError
from ..data.mot import MotRows

INSTALL = "pip install --no-deps trackeval==1.3.0"
SUMMARY = ("HOTA", "DetA", "AssA", "MOTA", "MOTP", "IDF1", "IDP", "IDR", "IDSW", "FP", "FN", "Frag", "MT", "ML")


def _trackeval():
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints that its BURST dataset lacks `tabulate`
            import trackeval
    except ImportError as exc:
        raise ConfigError(f"tracking metrics need TrackEval: {INSTALL} (the 'track' extra holds scipy, which "
                          f"it needs too) ({exc})") from None
    return trackeval


@dataclass
class TrackingResult:
    metrics: dict[str, float]  # SUMMARY names -> values (HOTA, DetA, AssA averaged over TrackEval's alphas)
    frames: int
    gt_ids: int
    gt_boxes: int
    tracker_ids: int
    tracker_boxes: int
    details: dict = field(default_factory=dict, repr=False)  # TrackEval's full results per metric

    def table(self, name: str = "") -> str:
        """Two aligned lines: the metric names and their values (percentages as TrackEval prints them)."""
        cells = [(key, _format(key, self.metrics[key])) for key in SUMMARY]
        widths = [max(len(k), len(v)) for k, v in cells]
        head = "  ".join(k.rjust(w) for (k, _), w in zip(cells, widths))
        values = "  ".join(v.rjust(w) for (_, v), w in zip(cells, widths))
        label = f"{name}: " if name else ""
        return (f"{label}{self.frames} frames, {self.gt_ids} ground-truth tracks ({self.gt_boxes} boxes), "
                f"{self.tracker_ids} tracks ({self.tracker_boxes} boxes)\n{head}\n{values}")


def _format(key: str, value: float) -> str:
    return f"{value:.0f}" if key in ("IDSW", "FP", "FN", "Frag", "MT", "ML") else f"{100 * value:.2f}"


def sequence_data(gt: MotRows, results: MotRows, frames: int) -> dict:
    """TrackEval's per-sequence data (``MotChallenge2DBox.get_preprocessed_seq_data`` without preprocessing)."""
    trackeval = _trackeval()
    iou = trackeval.datasets._base_dataset._BaseDataset._calculate_box_ious
    data: dict = {"gt_ids": [], "tracker_ids": [], "gt_dets": [], "tracker_dets": [], "similarity_scores": []}
    for frame in range(1, frames + 1):
        g, r = gt.in_frame(frame), results.in_frame(frame)
        similarity = iou(gt.boxes[g], results.boxes[r], box_format="xywh")
        keep = gt.flags[g].astype(int) != 0  # TrackEval reads the flag as an int: 0.5 is 0
        data["gt_ids"].append(gt.ids[g][keep])
        data["gt_dets"].append(gt.boxes[g][keep])
        data["similarity_scores"].append(similarity[keep])
        data["tracker_ids"].append(results.ids[r])
        data["tracker_dets"].append(results.boxes[r])
    for kind in ("gt", "tracker"):
        ids = data[f"{kind}_ids"]
        unique = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        data[f"{kind}_ids"] = [np.searchsorted(unique, frame_ids).astype(int) for frame_ids in ids]
        data[f"num_{kind}_ids"] = len(unique)
        data[f"num_{kind}_dets"] = int(sum(len(frame_ids) for frame_ids in ids))
    data["num_timesteps"] = frames
    return data


def check_frames(rows: MotRows, frames: int, where: str) -> None:
    """Every row must fall in the sequence's frames 1..frames (TrackEval refuses other timesteps)."""
    beyond = rows.frames > frames
    if beyond.any():
        first = int(np.flatnonzero(beyond)[0])
        raise DataError(f"{where}: frame {rows.frames[first]} (id {rows.ids[first]}) is past the end of the "
                        f"sequence ({frames} frames)")


def _summary(hota: dict, clear: dict, identity: dict) -> dict[str, float]:
    return {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
            "AssA": float(np.mean(hota["AssA"])), "MOTA": float(clear["MOTA"]), "MOTP": float(clear["MOTP"]),
            "IDF1": float(identity["IDF1"]), "IDP": float(identity["IDP"]), "IDR": float(identity["IDR"]),
            **{key: float(clear[name]) for key, name in (("IDSW", "IDSW"), ("FP", "CLR_FP"), ("FN", "CLR_FN"),
                                                         ("Frag", "Frag"), ("MT", "MT"), ("ML", "ML"))}}


def _metric_classes():
    trackeval = _trackeval()
    quiet = {"PRINT_CONFIG": False}
    return {"HOTA": trackeval.metrics.HOTA(quiet), "CLEAR": trackeval.metrics.CLEAR(quiet),
            "Identity": trackeval.metrics.Identity(quiet)}


def tracking_metrics(gt: MotRows, results: MotRows, frames: int) -> TrackingResult:
    """HOTA, CLEAR and Identity metrics of one sequence of ``frames`` frames."""
    data = sequence_data(gt, results, frames)
    details = {name: metric.eval_sequence(data) for name, metric in _metric_classes().items()}
    return TrackingResult(_summary(details["HOTA"], details["CLEAR"], details["Identity"]), frames,
                          data["num_gt_ids"], data["num_gt_dets"], data["num_tracker_ids"], data["num_tracker_dets"],
                          details)


def combined_metrics(results: list[TrackingResult]) -> TrackingResult:
    """Several sequences as one, as TrackEval's ``COMBINED_SEQ``: its ``combine_sequences`` of each metric (sums
    of the matches, not a mean of the sequences' scores)."""
    details = {name: metric.combine_sequences({str(i): r.details[name] for i, r in enumerate(results)})
               for name, metric in _metric_classes().items()}
    return TrackingResult(_summary(details["HOTA"], details["CLEAR"], details["Identity"]),
                          sum(r.frames for r in results), sum(r.gt_ids for r in results),
                          sum(r.gt_boxes for r in results), sum(r.tracker_ids for r in results),
                          sum(r.tracker_boxes for r in results), details)
