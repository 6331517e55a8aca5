"""The DCNv2 module against plain convolution: regular grid + unit mask == Conv2d, zero init == 0.5 x Conv2d,
integer offsets == a shifted Conv2d, float32 under autocast."""

import pytest
import torch
from torch import nn

from detzoo.models.dcn import ModulatedDeformConv2d

TAPS = 9


def _pair(stride: int, bias: bool) -> tuple[nn.Conv2d, ModulatedDeformConv2d]:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=stride, padding=1, bias=bias)
    return conv, ModulatedDeformConv2d.from_conv(conv)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_zero_offsets_and_unit_mask_equal_conv2d(stride, bias):
    conv, dcn = _pair(stride, bias)
    with torch.no_grad():
        dcn.offset_mask.bias[2 * TAPS:] = 40.0  # mask = sigmoid(40) = 1.0 in float32; offsets stay 0
    x = torch.randn(2, 6, 13, 17)
    expected = conv(x)
    assert dcn(x).shape == expected.shape
    torch.testing.assert_close(dcn(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_initialised_module_is_half_the_conv(stride):
    conv, dcn = _pair(stride, bias=False)
    assert torch.count_nonzero(dcn.offset_mask.weight) == 0 and torch.count_nonzero(dcn.offset_mask.bias) == 0
    x = torch.randn(2, 6, 12, 12)
    torch.testing.assert_close(dcn(x), 0.5 * conv(x), rtol=1e-5, atol=1e-5)
    conv, dcn = _pair(stride, bias=True)  # the mask scales the sampled input, not the bias
    torch.testing.assert_close(dcn(x), 0.5 * (conv(x) - conv.bias.view(1, -1, 1, 1)) + conv.bias.view(1, -1, 1, 1),
                               rtol=1e-5, atol=1e-5)


def test_integer_offsets_shift_the_sampling_grid():
    """Offsets are (dy, dx) per tap: dx = +1 everywhere samples one pixel to the right."""
    conv, dcn = _pair(1, bias=False)
    with torch.no_grad():
        dcn.offset_mask.bias[1:2 * TAPS:2] = 1.0
        dcn.offset_mask.bias[2 * TAPS:] = 40.0
    x = torch.randn(1, 6, 9, 11)
    # tap (ky, kx) of output (y, x) reads x(y + ky - 1, x + kx): the padding moves from the left to the right
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 2, 1, 1)), conv.weight)
    torch.testing.assert_close(dcn(x), expected, rtol=1e-5, atol=1e-5)


def test_runs_in_float32_under_bfloat16_autocast_and_learns_offsets():
    _, dcn = _pair(2, bias=False)
    x = torch.randn(1, 6, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dcn(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), dcn(x.bfloat16().float()), rtol=1e-2, atol=1e-2)
    out.float().square().sum().backward()
    assert dcn.offset_mask.weight.grad.abs().sum() > 0 and dcn.weight.grad.abs().sum() > 0


def test_from_conv_rejects_grouped_convs():
    with pytest.raises(ValueError, match="grouped"):
        ModulatedDeformConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, groups=2))
