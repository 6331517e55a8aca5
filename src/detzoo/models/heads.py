"""Prediction heads: per feature level, a box predictor and a class predictor whose outputs are flattened
to [N, A, 4] and [N, A, C] in anchor order (location by location, all boxes of a location together)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def flatten_level(x: torch.Tensor, per_box: int) -> torch.Tensor:
    """[N, B*C, H, W] -> [N, H*W*B, C]."""
    n, _, h, w = x.shape
    return x.view(n, -1, per_box, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_box)


def prior_bias(prior_probability: float = 0.01) -> float:
    """Bias that makes every sigmoid start at ``prior_probability`` (focal loss paper)."""
    return -math.log((1 - prior_probability) / prior_probability)


def ssdlite_predictor(in_channels: int, out_channels: int, norm_layer: Callable[[int], nn.Module],
                      depthwise_bias: bool = False) -> nn.Sequential:
    """3x3 depthwise + norm + ReLU6 + 1x1 conv with bias (SSDLite)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=depthwise_bias),
        norm_layer(in_channels),
        nn.ReLU6(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class PerLevelHead(nn.Module):
    """One box and one class predictor per level (not shared across levels)."""

    def __init__(self, box_layers: list[nn.Module], class_layers: list[nn.Module], num_logits: int,
                 class_bias: float | None = None):
        super().__init__()
        self.box_layers = nn.ModuleList(box_layers)
        self.class_layers = nn.ModuleList(class_layers)
        self.num_logits = num_logits
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if class_bias is not None:
            for layers in self.class_layers:
                last = [m for m in layers.modules() if isinstance(m, nn.Conv2d)][-1]
                nn.init.constant_(last.bias, class_bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = [flatten_level(layer(f), 4) for layer, f in zip(self.box_layers, features)]
        logits = [flatten_level(layer(f), self.num_logits) for layer, f in zip(self.class_layers, features)]
        return torch.cat(boxes, dim=1), torch.cat(logits, dim=1)


class SharedTower(nn.Module):
    """``depth`` x [3x3 conv shared by every level, a norm layer of each level's own, ReLU6]: the weights see
    every level, while each level keeps its own feature statistics."""

    def __init__(self, channels: int, num_levels: int, depth: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(depth))
        self.norms = nn.ModuleList(nn.ModuleList(norm_layer(channels) for _ in range(depth))
                                   for _ in range(num_levels))
        self.activation = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms[level]):
            x = self.activation(norm(conv(x)))
        return x


class WeightSharedHead(nn.Module):
    """The SSD-FPN (RetinaNet-style) head of recipes.md sections 3-4: a box tower and a class tower
    (``SharedTower``), then a 3x3 box predictor and a 3x3 class predictor shared by all levels. Only
    ``class_predictor`` depends on the class count."""

    def __init__(self, channels: int, num_levels: int, num_anchors: int, num_logits: int, depth: int = 4,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, class_bias: float | None = None):
        super().__init__()
        self.num_logits = num_logits
        self.box_tower = SharedTower(channels, num_levels, depth, norm_layer)
        self.class_tower = SharedTower(channels, num_levels, depth, norm_layer)
        self.box_predictor = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.class_predictor = nn.Conv2d(channels, num_anchors * num_logits, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if class_bias is not None:
            nn.init.constant_(self.class_predictor.bias, class_bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = [flatten_level(self.box_predictor(self.box_tower(f, level)), 4) for level, f in enumerate(features)]
        logits = [flatten_level(self.class_predictor(self.class_tower(f, level)), self.num_logits)
                  for level, f in enumerate(features)]
        return torch.cat(boxes, dim=1), torch.cat(logits, dim=1)
