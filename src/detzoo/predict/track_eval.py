"""``detzoo eval MODEL SOURCE --gt gt.txt``: track a video (or an image folder, or a MOTChallenge sequence folder
holding ``img1/`` and ``gt/gt.txt``) and score the tracks against MOTChallenge ground truth with TrackEval
(``evaluation/tracking.py``): HOTA, MOTA, IDF1 and their parts.

The tracks are written as a MOTChallenge results file, ``OUT/<name>.txt``, and the metrics are computed from
that file as read back - so TrackEval run by hand on the same ``gt.txt`` and ``<name>.txt`` gives the same
numbers - and saved in ``OUT/<name>.metrics.json``. This is an offline evaluation of the whole sequence: a
track's gaps of up to ``track.fill_gaps`` frames are filled by interpolation first (``tracking/gaps.py``).
The ground truth is read and checked before the model loads.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..common.config import track_settings
from ..common.errors import ConfigError, DataError
from ..common.files import write_json
from ..data.mot import read_mot, write_mot
from ..evaluation.tracking import check_frames, tracking_metrics
from ..models.selection import SelectOptions
from .predictor import Predictor
from .tracking import track_source


def sequence_paths(source: str, gt: str | None) -> tuple[str, Path]:
    """(what to track, the ground truth). A MOTChallenge sequence folder gives both (``img1/``, ``gt/gt.txt``)."""
    folder = Path(source)
    if folder.is_dir() and (folder / "img1").is_dir():
        source = str(folder / "img1")
        if gt is None and (folder / "gt" / "gt.txt").is_file():
            gt = str(folder / "gt" / "gt.txt")
    if gt is None:
        raise ConfigError(f"{source}: tracking evaluation needs the ground truth: --gt gt.txt (MOTChallenge rows; "
                          "a sequence folder with img1/ and gt/gt.txt needs none)")
    return source, Path(gt)


def evaluate_tracking(model: str, source: str, gt: str | None, out: Path, tracker: list[str] | None = None,
                      device: str = "auto", precision: str | None = None, batch_size: int = 8,
                      score: float | None = None) -> dict:
    """Track, write ``OUT/<name>.txt``, score it; prints the table and returns the metrics."""
    source, gt_path = sequence_paths(source, gt)
    truth = read_mot(gt_path, ground_truth=True)
    predictor = Predictor.from_file(model, device=device, precision=precision, batch_size=batch_size)
    settings = track_settings(tracker or [], predictor.tracking)
    tracking = track_source(predictor, source, SelectOptions(score_threshold=score), settings, keep_rows=True)
    name = tracking.source.name
    if tracking.expected_frames is not None:  # a bad ground truth is one line before the frames are predicted
        try:
            check_frames(truth, tracking.expected_frames, str(gt_path))
        except DataError:
            tracking.close()
            raise
    try:
        for _ in tqdm(tracking, total=tracking.expected_frames, unit="frame", desc=name, disable=None):
            pass
    finally:
        tracking.close()
    frames = tracking.frames
    if frames == 0:
        raise DataError(f"{source}: no frames to evaluate")
    check_frames(truth, frames, str(gt_path))
    results_path = write_mot(tracking.mot_rows(settings.fill_gaps), Path(out) / f"{name}.txt")
    result = tracking_metrics(truth, read_mot(results_path, ground_truth=False), frames)
    print(result.table(name))
    document = {"source": source, "gt": str(gt_path), "results": str(results_path), "frames": frames,
                "tracker": asdict(settings), "metrics": result.metrics, "gt_ids": result.gt_ids,
                "gt_boxes": result.gt_boxes, "tracker_ids": result.tracker_ids,
                "tracker_boxes": result.tracker_boxes}
    metrics_path = write_json(document, Path(out) / f"{name}.metrics.json")
    print(f"tracks (MOTChallenge results): {results_path}; metrics: {metrics_path}")
    return result.metrics
