"""Evaluate a model on a dataset: the same inference loop as the Predictor, sharded over DDP processes
(each takes every world_size-th image; rank 0 gathers the detections and scores them)."""

from __future__ import annotations

import torch

from ..data.loader import DetectionDataset, eval_loader
from ..data.records import DetectionData
from ..data.transforms import eval_transform
from ..evaluation import EvalResult, build_evaluator
from ..predict import TorchBackend, run_inference
from ..structures import Detections
from .distributed import DistInfo, all_gather_objects


def collect_detections(backend, data: DetectionData, batch_size: int, workers: int,
                       dist: DistInfo | None = None) -> list[Detections]:
    dist = dist or DistInfo()
    dataset = DetectionDataset(data, eval_transform(backend.preprocess), skip_bad=False)
    loader = eval_loader(dataset, batch_size, backend.preprocess.size_divisible, workers,
                         rank=dist.rank, world_size=dist.world_size)
    detections = list(run_inference(backend, loader, data.class_names))
    if dist.enabled:
        detections = [d for part in all_gather_objects(detections) for d in part]
    return detections


def evaluate_model(model: torch.nn.Module, data: DetectionData, metric: str, batch_size: int = 8,
                   workers: int = 0, device: torch.device | str = "cpu", dist: DistInfo | None = None,
                   iou_thresh: float = 0.5) -> tuple[EvalResult | None, list[Detections]]:
    """-> (result on rank 0, None elsewhere; all detections on rank 0)."""
    was_training = model.training
    backend = TorchBackend(model, device)
    try:
        detections = collect_detections(backend, data, batch_size, workers, dist)
    finally:
        model.train(was_training)
    if dist is not None and not dist.is_main:
        return None, []
    evaluator = build_evaluator(metric, data, iou_thresh)
    evaluator.process(detections)
    return evaluator.evaluate(), detections
