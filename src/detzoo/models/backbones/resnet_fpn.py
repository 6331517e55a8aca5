"""ResNet + FPN for Faster R-CNN (recipes.md section 7), from torchvision parts: a bottleneck ResNet with
frozen batch norm (``FrozenBatchNorm2d``, running statistics), the stem and layer1 frozen, and torchvision's
``BackboneWithFPN`` on layer1..layer4 (P2-P5, 256 channels) plus P6 by ``LastLevelMaxPool``. Optionally every 3x3
conv of the named stages is a modulated deformable conv (DCNv2).

Module names match torchvision's ``fasterrcnn_resnet50_fpn`` backbone (``body.*``, ``fpn.*``), so its state
dicts load unchanged.
"""

from __future__ import annotations

import torch
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..dcn import ModulatedDeformConv2d

DCN_STAGES = ("layer2", "layer3", "layer4")  # c3-c5: 4 + 6 + 3 = 13 convs in ResNet-50
STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
FPN_CHANNELS = 256
FPN_STRIDES = (4, 8, 16, 32, 64)  # P2..P6: each map is ceil(input side / stride) for inputs padded to 32


class ResNetFPN(BackboneWithFPN):
    """``forward(images) -> OrderedDict`` of P2..P6 (keys "0".."3", "pool"), each ``out_channels`` = 256,
    at ``strides`` 4..64."""

    strides = FPN_STRIDES

    def __init__(self, depth: int = 50, dcn_stages: tuple[str, ...] = (), trainable_stages: int = 3):
        if depth not in (50, 101, 152):
            raise ValueError(f"ResNetFPN supports bottleneck ResNets (50, 101, 152), not resnet{depth}")
        if not 0 <= trainable_stages <= len(STAGES):
            raise ValueError(f"trainable_stages must be in 0..{len(STAGES)}, got {trainable_stages}")
        body = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
        for stage in dcn_stages:
            for block in getattr(body, stage):
                block.conv2 = ModulatedDeformConv2d.from_conv(block.conv2)
        trainable = STAGES[len(STAGES) - trainable_stages:]
        for name, parameter in body.named_parameters():
            parameter.requires_grad_(name.startswith(trainable))
        return_layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
        in_channels = [getattr(body, f"layer{i}")[-1].conv3.out_channels for i in range(1, 5)]
        super().__init__(body, return_layers, in_channels, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())

    def deformable_convs(self) -> dict[str, ModulatedDeformConv2d]:
        return {name: m for name, m in self.named_modules() if isinstance(m, ModulatedDeformConv2d)}

    def convert_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A torchvision ResNet ImageNet state dict -> this module's keys. The classifier and BN step counters
        are dropped; the 3x3 weights of each deformable conv load under the name of the plain conv it replaced
        (``body.layer2.0.conv2.weight``). What ImageNet weights do not hold (the FPN, the offset/mask
        predictors) keeps its current initial values."""
        converted = {f"body.{k}": v for k, v in state.items()
                     if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
        for key, value in self.state_dict().items():
            if key.startswith("fpn.") or ".offset_mask." in key:
                converted.setdefault(key, value)
        return converted
