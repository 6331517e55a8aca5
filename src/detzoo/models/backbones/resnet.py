"""ResNet-50 feature extractor (torchvision ``resnet50``): C3, C4, C5 (512, 1024, 2048 channels at strides
8, 16, 32), the FPN inputs of ``ssd_resnet50_fpn`` (recipes.md section 4). The modules keep torchvision's
names, so an ImageNet ``resnet50`` file loads once its classifier (``fc``) is dropped."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50


class ResNet50Features(nn.Module):
    def __init__(self):
        super().__init__()
        net = resnet50()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = [512, 1024, 2048]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]

    @staticmethod
    def convert_pretrained(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ``resnet50`` state dict -> this module's keys (the classifier ``fc`` is dropped)."""
        return {k: v for k, v in state.items() if not k.startswith("fc.")}
