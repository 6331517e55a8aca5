"""Necks turn the backbone's maps into the SSD pyramid. Each takes the backbone's list of maps and returns
every level the head predicts on; ``out_channels`` lists the channels of all of them.

- ``InvertedResidualExtras``: the backbone's maps, then extra stride-2 MobileNetV2 blocks (SSDLite).
- ``VGGExtras``: the SSD paper's layers after VGG16 (L2Norm on conv4_3, pool5, fc6, fc7, conv8_2 .. conv11_2).
- ``FPN``: torchvision's ``FeaturePyramidNetwork`` (1x1 laterals, nearest top-down) with the recipe's
  3x3 conv + BN + ReLU6 output blocks and P6/P7 from two stride-2 conv + BN + ReLU6 on P5.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork


class InvertedResidualExtras(nn.Module):
    """Extra levels made of stride-2 MobileNetV2 inverted residual blocks (torchvision's block).
    ``specs`` lists (out_channels, expand_ratio) per new level; the backbone maps pass through."""

    def __init__(self, in_channels: list[int], specs: list[tuple[int, float]],
                 norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        blocks = []
        channels = in_channels[-1]
        for out_channels, expand_ratio in specs:
            blocks.append(InvertedResidual(channels, out_channels, 2, expand_ratio, norm_layer=norm_layer))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = list(in_channels) + [out for out, _ in specs]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = list(features)
        x = features[-1]
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def _conv_relu(cin: int, cout: int, kernel: int, **kwargs) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, **kwargs), nn.ReLU(inplace=True)]


class VGGExtras(nn.Module):
    """SSD300's layers after VGG16's conv4_3 and conv5_3, as torchvision's ``ssd300_vgg16`` builds them:
    conv4_3 rescaled by an L2 norm with a learnt per-channel scale (initialised to 20); pool5 3x3 stride 1,
    fc6 3x3 dilation 6, fc7 1x1; conv8_2 .. conv11_2 (1x1 then 3x3), all with ReLU. Levels 38, 19, 10, 5, 3, 1
    at 300 px with 512, 1024, 512, 256, 256, 256 channels."""

    def __init__(self, l2_scale: float = 20.0):
        super().__init__()
        self.scale_weight = nn.Parameter(torch.full((512,), l2_scale))
        self.fc = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                *_conv_relu(512, 1024, 3, padding=6, dilation=6), *_conv_relu(1024, 1024, 1))
        self.blocks = nn.ModuleList([
            nn.Sequential(*_conv_relu(1024, 256, 1), *_conv_relu(256, 512, 3, padding=1, stride=2)),
            nn.Sequential(*_conv_relu(512, 128, 1), *_conv_relu(128, 256, 3, padding=1, stride=2)),
            nn.Sequential(*_conv_relu(256, 128, 1), *_conv_relu(128, 256, 3)),
            nn.Sequential(*_conv_relu(256, 128, 1), *_conv_relu(128, 256, 3)),
        ])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.out_channels = [512, 1024, 512, 256, 256, 256]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        conv4_3, conv5_3 = features
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(conv4_3)]
        x = self.fc(conv5_3)
        outputs.append(x)
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


class ConvExtraLevels(ExtraFPNBlock):
    """P6, P7, ...: successive 3x3 stride-2 conv + norm + ReLU6, starting from the last FPN output (P5)."""

    def __init__(self, channels: int, levels: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.convs = nn.ModuleList(
            Conv2dNormActivation(channels, channels, 3, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)
            for _ in range(levels))

    def forward(self, results: list[torch.Tensor], x: list[torch.Tensor],
                names: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        last = results[-1]
        for conv in self.convs:
            last = conv(last)
            results.append(last)
            names.append(f"extra{len(names)}")
        return results, names


class FPN(FeaturePyramidNetwork):
    """torchvision's FPN with the SSD-FPN recipe's blocks: lateral 1x1 conv (with bias) to ``channels``,
    nearest top-down upsampling, a 3x3 conv + norm + ReLU6 on each merged map (torchvision's output block
    has no activation), then ``extra_levels`` stride-2 levels from the last one (P6, P7)."""

    def __init__(self, in_channels: list[int], channels: int = 256, extra_levels: int = 2,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__(in_channels, channels, extra_blocks=ConvExtraLevels(channels, extra_levels, norm_layer))
        self.layer_blocks = nn.ModuleList(
            Conv2dNormActivation(channels, channels, 3, norm_layer=norm_layer, activation_layer=nn.ReLU6)
            for _ in in_channels)
        for module in self.modules():  # torchvision FPN's initialisation, for the replaced blocks too
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.out_channels = [channels] * (len(in_channels) + extra_levels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        named = OrderedDict((str(i), f) for i, f in enumerate(features))
        return list(super().forward(named).values())
