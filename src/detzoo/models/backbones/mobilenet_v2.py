"""MobileNetV2 feature extractor for SSD (torchvision ``mobilenet_v2``): the 1x1 expansion output inside
the first 160-channel block (576 channels, stride 16) and the final 1280-channel map (stride 32)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from ..key_maps import pytorch_ssd_mobilenet_v2

# recipes.md section 2: BN eps 1e-3, momentum 0.03 (torch convention)
SSD_BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
SPLIT_BLOCK = 14  # features[14] is the first stride-2 block to 160 channels; its expansion gives level 0


class MobileNetV2Features(nn.Module):
    def __init__(self, width_mult: float = 1.0, norm_layer: Callable[[int], nn.Module] = SSD_BATCH_NORM):
        super().__init__()
        self.features = mobilenet_v2(width_mult=width_mult, norm_layer=norm_layer).features
        self.out_channels = [self.features[SPLIT_BLOCK].conv[0].out_channels, self.features[-1].out_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for layer in self.features[:SPLIT_BLOCK]:
            x = layer(x)
        block = self.features[SPLIT_BLOCK]  # stride 2, so no residual connection to honour
        expansion = block.conv[0](x)
        x = expansion
        for layer in block.conv[1:]:
            x = layer(x)
        for layer in self.features[SPLIT_BLOCK + 1:]:
            x = layer(x)
        return [expansion, x]

    @staticmethod
    def convert_pretrained(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A torchvision ``mobilenet_v2`` state dict or pytorch-ssd's base-net file (``mb2-imagenet-71_8.pth``,
        keys ``0.0.weight``, ``k.conv.N.*``, ``18.0.*``) -> this module's keys; the classifier is dropped."""
        flat_blocks = any(re.fullmatch(r"features\.\d+\.conv\.6\.weight", k) for k in state)
        state = pytorch_ssd_mobilenet_v2(state, "features." if flat_blocks else "")  # a whole pytorch-ssd model
        return {k: v for k, v in state.items() if not k.startswith("classifier.")}
