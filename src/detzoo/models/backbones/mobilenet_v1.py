"""MobileNetV1 (Howard et al., 2017) feature extractor, written here because torchvision has no MobileNetV1.

A 3x3 stride-2 convolution to 32 channels, then 13 depthwise-separable blocks (3x3 depthwise + BN + ReLU6,
1x1 pointwise + BN + ReLU6), no convolution bias (torchvision's ``Conv2dNormActivation`` blocks). The
outputs are those of pointwise layers 5, 11 and 13: 256 channels at stride 8, 512 at 16, 1024 at 32 - the FPN
inputs of ``ssd_mobilenetv1_fpn`` (recipes.md section 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from ..key_maps import pytorch_ssd_mobilenet_v1

# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1Features(nn.Module):
    def __init__(self, out_blocks: tuple[int, ...] = (5, 11, 13),
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()

        def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
            return Conv2dNormActivation(cin, cout, kernel, stride, groups=groups, norm_layer=norm_layer,
                                        activation_layer=nn.ReLU6)

        layers: list[nn.Module] = [conv(3, 32, 3, stride=2)]
        channels = 32
        for out_channels, stride in BLOCKS:
            layers.append(nn.Sequential(conv(channels, channels, 3, stride, groups=channels),
                                        conv(channels, out_channels, 1)))
            channels = out_channels
        self.features = nn.Sequential(*layers)  # features[k] is block k (features[0] the stem)
        self.out_blocks = tuple(out_blocks)
        self.out_channels = [BLOCKS[k - 1][0] for k in out_blocks]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features[: self.out_blocks[-1] + 1]):
            x = layer(x)
            if index in self.out_blocks:
                outputs.append(x)
        return outputs

    @staticmethod
    def convert_pretrained(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This module's own keys, or pytorch-ssd's MobileNetV1 (``mobilenet_v1_with_relu_69_5.pth``: ``model.k.i.*``
        or base-net ``k.i.*`` keys; its classifier ``fc`` is dropped)."""
        return pytorch_ssd_mobilenet_v1(state)
