"""Evaluate a model on a dataset: the same inference loop as the Predictor, sharded over DDP processes.

Process r takes images r, r + W, r + 2W, ... (no padding, so no image is evaluated twice and there is no
padding to drop); rank 0 gathers every process's detections, puts them back in dataset order, checks that
each image is there exactly once, and scores them.
"""

from __future__ import annotations

import torch

from ..common.distributed import DistInfo, all_gather_objects
from ..common.structures import Detections
from ..data.loader import inference_loader
from ..data.records import DetectionData
from ..evaluation import EvalResult, evaluate_detections
from ..models.selection import SelectOptions
from .inference import TorchBackend, run_inference


def interleave(parts: list[list[Detections]], total: int) -> list[Detections]:
    """Per-process lists (process r holds images r, r + W, ...) -> one list in dataset order."""
    world_size = len(parts)
    ordered: list[Detections | None] = [None] * total
    for rank, part in enumerate(parts):
        expected = len(range(rank, total, world_size))
        if len(part) != expected:
            raise RuntimeError(f"distributed evaluation: process {rank} returned {len(part)} results for its "
                               f"{expected} images")
        ordered[rank::world_size] = part
    return ordered  # type: ignore[return-value]


def local_detections(backend, data: DetectionData, batch_size: int, workers: int,
                     dist: DistInfo | None = None, options: SelectOptions | None = None) -> list[Detections]:
    """The detections of this process's share of the images (all of them in a single process), selected with
    ``options`` (the model's own settings when None)."""
    dist = dist or DistInfo()
    loader = inference_loader(data, backend.preprocess, batch_size, workers, dist.rank, dist.world_size,
                              getattr(backend, "device", None))
    return list(run_inference(backend, loader, data.class_names, options))


def collect_detections(backend, data: DetectionData, batch_size: int, workers: int,
                       dist: DistInfo | None = None, options: SelectOptions | None = None) -> list[Detections]:
    """Every image's detections in dataset order on rank 0 (an empty list on the other processes)."""
    dist = dist or DistInfo()
    detections = local_detections(backend, data, batch_size, workers, dist, options)
    if not dist.enabled:
        return detections
    parts = all_gather_objects(detections)
    if not dist.is_main:
        return []
    ordered = interleave(parts, len(data))
    if [d.image_id for d in ordered] != [r.image_id for r in data.records]:
        raise RuntimeError("distributed evaluation: the gathered detections are not one per image in order")
    return ordered


def evaluate_model(model: torch.nn.Module, data: DetectionData, metric: str, batch_size: int = 8,
                   workers: int = 0, device: torch.device | str = "cpu", dist: DistInfo | None = None,
                   iou_thresh: float = 0.5, score_threshold: float | None = None
                   ) -> tuple[EvalResult | None, list[Detections]]:
    """-> (result on rank 0, None elsewhere; all detections on rank 0), at the evaluation threshold
    ``score_threshold`` (default: the model's, ``models.selection.evaluation_options``) with at most 100
    detections per image; both thresholds are in the result (``thresholds``)."""
    was_training = model.training
    backend = TorchBackend(model, device)
    options, note = backend.evaluation_options(score_threshold)
    try:
        detections = collect_detections(backend, data, batch_size, workers, dist, options)
    finally:
        model.train(was_training)
    if dist is not None and not dist.is_main:
        return None, []
    result = evaluate_detections(detections, data, metric, iou_thresh)
    result.set_thresholds(options.score_threshold, backend.score_threshold, note)
    return result, detections
