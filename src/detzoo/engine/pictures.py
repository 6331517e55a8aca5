"""Pictures of a dataset and of an evaluation: images shrunk to thumbnails with boxes drawn by
``visualize.draw`` (ground truth and detections alike), and ``write_evaluation_pictures``, which ``detzoo
eval`` and every evaluation during training call (PR curves, per-class AP, confusion matrix, samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ..common.structures import Detections
from ..data.image_files import read_image
from ..data.records import DataError, DetectionData, ImageRecord
from ..evaluation import EvalResult, plots
from ..evaluation.confusion import confusion_matrix
from ..visualize import draw

THUMBNAIL = 256  # longest side of a drawn sample, pixels
SAMPLE_SCORE = 0.3  # detections drawn and counted in the confusion matrix (predict's default --score)
MATCH_IOU = 0.5


def spread_indices(data: DetectionData, count: int) -> list[int]:
    """``count`` images spread evenly over the dataset (the same ones every time), preferring images with
    objects."""
    with_objects = [i for i, r in enumerate(data.records) if r.num_objects] or list(range(len(data.records)))
    if not with_objects or count <= 0:
        return []
    picks = np.linspace(0, len(with_objects) - 1, min(count, len(with_objects))).round().astype(int)
    return [with_objects[i] for i in sorted(set(picks.tolist()))]


def ground_truth(record: ImageRecord, class_names: list[str]) -> Detections:
    """A record's boxes as Detections (score 1), drawn the way predictions are (``thumbnail(..., scores=False)``)."""
    return Detections(torch.from_numpy(record.boxes).float(), torch.ones(record.num_objects),
                      torch.from_numpy(record.labels), class_names, record.image_id, str(record.path))


def thumbnail(image: torch.Tensor, det: Detections, side: int = THUMBNAIL, scores: bool = True) -> np.ndarray:
    """A uint8 [3,H,W] image shrunk to at most ``side`` pixels with ``det`` (original pixels) drawn -> HxWx3."""
    height, width = image.shape[-2:]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        image = F.resize(image, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)
    sx, sy = image.shape[-1] / width, image.shape[-2] / height
    shrunk = Detections(det.boxes * torch.tensor([sx, sy, sx, sy]), det.scores, det.labels, det.class_names,
                        det.image_id, det.path)
    return draw(image, shrunk, scores)


def write_evaluation_pictures(result: EvalResult, detections: list[Detections], data: DetectionData,
                              folder: Path, samples: int = 4, title: str = "") -> list[Path]:
    """The evaluation's pictures in ``folder``; those that need the detections are left out when they do
    not hold one entry per image of ``data``. Returns the files written."""
    folder = Path(folder)
    prefix = f"{title}: " if title else ""
    written = [plots.plot_pr_curves(result, folder / plots.PR_CURVES, f"{prefix}precision / recall"),
               plots.plot_class_ap(result, folder / plots.CLASS_AP, f"{prefix}AP per class")]
    if len(detections) == len(data.records) and data.records:
        matrix = confusion_matrix(detections, data, SAMPLE_SCORE, MATCH_IOU)
        written.append(plots.plot_confusion(matrix, data.class_names, folder / plots.CONFUSION, SAMPLE_SCORE,
                                            MATCH_IOU, f"{prefix}confusion matrix (score >= {SAMPLE_SCORE:g}, "
                                                       f"IoU >= {MATCH_IOU:g})"))
        rows = []
        for index in spread_indices(data, samples):
            record = data.records[index]
            try:
                image = read_image(record)
            except DataError:
                continue
            found = detections[index].filter(SAMPLE_SCORE)
            rows.append((f"{record.path.name}: ground truth ({record.num_objects})",
                         thumbnail(image, ground_truth(record, data.class_names), scores=False),
                         f"detections >= {SAMPLE_SCORE:g} ({len(found)})", thumbnail(image, found)))
        written.append(plots.plot_side_by_side(rows, folder / plots.SAMPLES, f"{prefix}validation samples"))
    return [path for path in written if path is not None]
