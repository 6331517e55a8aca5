"""Necks that turn backbone features into the SSD pyramid: extra stride-2 levels appended to the
backbone's own maps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual


class InvertedResidualExtras(nn.Module):
    """Extra levels made of stride-2 MobileNetV2 inverted residual blocks (torchvision's block).
    ``specs`` lists (out_channels, expand_ratio) per new level; the backbone maps pass through."""

    def __init__(self, in_channels: int, specs: list[tuple[int, float]], norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        blocks = []
        for out_channels, expand_ratio in specs:
            blocks.append(InvertedResidual(in_channels, out_channels, 2, expand_ratio, norm_layer=norm_layer))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [out for out, _ in specs]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = list(features)
        x = features[-1]
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs
