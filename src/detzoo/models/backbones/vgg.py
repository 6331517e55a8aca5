"""VGG16 feature extractor for SSD300 (recipes.md section 5): conv1_1 .. conv5_3 of torchvision's ``vgg16``
with pool3 in ceil mode (75 -> 38 px at 300 px input, as the SSD paper and torchvision's ``ssd300_vgg16``) and
without pool5. Outputs conv4_3 (512 channels, 38 x 38) and conv5_3 (512, 19 x 19); the SSD layers after them
(L2Norm, pool5, fc6, fc7, extras) are the neck ``necks.VGGExtras``.

torchvision's ``SSDFeatureExtractorVGG`` builds the same network but as one module holding both the ImageNet
part and the new layers; splitting them keeps ``train.freeze=backbone`` and ImageNet loading to the part that
has ImageNet weights. The layers come from torchvision's VGG ``make_layers`` with its "D" (VGG16) layout, so
the keys are ``features.N.*`` as in a torchvision ``vgg16`` file.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

POOL3 = 16  # features[16] is pool3
POOL4 = 23  # features[:23] ends with conv4_3 + ReLU
POOL5 = 30  # dropped; the neck has its own 3x3 stride-1 pool5


class VGG16Features(nn.Module):
    def __init__(self):
        super().__init__()
        features = make_layers(cfgs["D"], batch_norm=False)[:POOL5]
        features[POOL3].ceil_mode = True
        for module in features.modules():
            if isinstance(module, nn.Conv2d):  # torchvision VGG's initialisation
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.features = features
        self.out_channels = [512, 512]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv4_3 = self.features[:POOL4](x)
        return [conv4_3, self.features[POOL4:](conv4_3)]

    @staticmethod
    def convert_pretrained(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ``vgg16`` state dict (``IMAGENET1K_V1`` or ``IMAGENET1K_FEATURES``) -> this module's
        keys (the classifier is dropped)."""
        return {k: v for k, v in state.items() if not k.startswith("classifier.")}
