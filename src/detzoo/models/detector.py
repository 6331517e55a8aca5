"""The contract every zoo model meets, so the engine, evaluator, Predictor and exporter treat them alike.

- ``preprocess``: how inputs are resized and normalised (done outside the model).
- ``compute_loss(images, targets) -> dict of losses`` in training.
- ``detect(images, image_sizes) -> list of {boxes, scores, labels}`` in input-image pixels.
- ``backbone``: the part ``train.freeze=backbone`` freezes and ImageNet weights load into.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.transforms import Preprocess


class Detector(nn.Module):
    preprocess: Preprocess
    num_classes: int
    backbone: nn.Module

    def compute_loss(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def detect(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        raise NotImplementedError
