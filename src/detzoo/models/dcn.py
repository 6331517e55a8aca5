"""Modulated deformable convolution (DCNv2) as a drop-in for a 3x3 ``nn.Conv2d``.

torchvision ships the operator (``DeformConv2d`` with a ``mask``) but not the module that predicts its offsets
and mask, so that small part is written here (mmcv's ``ModulatedDeformConv2dPack`` layout): a plain conv with
the same kernel, stride and padding as the deformable one predicts 2 x k x k offsets and k x k mask logits per
output pixel. It is zero-initialised, so a new module samples the regular grid with mask sigmoid(0) = 0.5, i.e.
it starts as 0.5 x the plain convolution whose weights it took over.

The operator runs in float32 even under autocast (in float64 for a float64 input): its CPU kernel has no
bfloat16 path, and sampling locations are better kept in full precision anyway. The result is cast back to
the input's dtype.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torchvision.ops import DeformConv2d, deform_conv2d


class ModulatedDeformConv2d(DeformConv2d):
    """DCNv2 with one offset group. ``weight`` / ``bias`` have the layout of ``nn.Conv2d``, so a plain
    conv's state dict entries load into it unchanged; the offset/mask predictor is ``offset_mask``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=bias)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.offset_mask = nn.Conv2d(in_channels, 3 * taps, self.kernel_size, stride=self.stride,
                                     padding=self.padding, dilation=self.dilation, bias=True)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ModulatedDeformConv2d:
        """A DCNv2 module with ``conv``'s geometry and a copy of its weights (and bias)."""
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"cannot make a deformable conv from {conv} (grouped or non-square kernel)")
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                     padding=conv.padding[0], dilation=conv.dilation[0], bias=conv.bias is not None)
        with torch.no_grad():
            module.weight.copy_(conv.weight)
            if conv.bias is not None:
                module.bias.copy_(conv.bias)
        return module.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        taps = self.kernel_size[0] * self.kernel_size[1]
        # float32 from half precision (float64 stays); no autocast context on the meta device, which `detzoo
        # models` counts FLOPs on: it has no autocast
        full = torch.promote_types(x.dtype, torch.float32)
        no_autocast = (torch.autocast(x.device.type, enabled=False)
                       if torch.amp.is_autocast_available(x.device.type) else contextlib.nullcontext())
        with no_autocast:
            x32 = x.to(full)
            offset, mask_logits = self.offset_mask(x32).split([2 * taps, taps], dim=1)
            out = deform_conv2d(x32, offset, self.weight.to(full),
                                None if self.bias is None else self.bias.to(full),
                                stride=self.stride, padding=self.padding, dilation=self.dilation,
                                mask=mask_logits.sigmoid())
        return out.to(x.dtype)
