"""Precise BatchNorm statistics (detectron2's PreciseBN): before an evaluation, re-estimate the running mean
and variance of every BatchNorm layer that is training, with the current weights, over a fixed set of
training images (eval transform). During a short or steep schedule the running averages lag far behind
the weights (measured on the demo: eval-mode loss 2.3 against a train-mode loss of 0.0 on the same batch);
recomputing them closes that gap. Like ``torch.optim.swa_utils.update_bn``, but it leaves frozen (eval-mode)
layers alone and averages the statistics over DDP processes."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.loader import DetectionDataset, eval_loader
from ..data.records import DetectionData
from ..data.transforms import eval_transform, normalize
from .distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, data: DetectionData, batches: int, batch_size: int,
                            device: torch.device, workers: int = 0, dist: DistInfo | None = None) -> int:
    """Re-estimate the statistics of the BN layers in training mode; returns how many layers were updated."""
    dist = dist or DistInfo()
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not layers or batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    preprocess = model.preprocess
    dataset = DetectionDataset(data, eval_transform(preprocess))
    loader = eval_loader(dataset, batch_size, preprocess.size_divisible, workers, dist.rank, dist.world_size)
    try:
        for _, batch in zip(range(batches), loader):
            if len(batch):
                model(normalize(batch.images.to(device), preprocess))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if dist.enabled:
        for layer in layers:
            for stat in (layer.running_mean, layer.running_var):
                stat.copy_(all_reduce_sum(stat.clone()) / dist.world_size)
    return len(layers)
