"""Masked convolutions that skip the kernel rows and columns their mask zeroes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genctl.models.pixelrnn import GateConv
from genctl.nn.masked import MaskedConv2d


@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel", [7, 3, 1, (1, 5), (3, 5)])
def test_cropped_kernels_give_the_full_masked_kernels_outputs(kernel, mask_type, colors):
    torch.manual_seed(0)
    conv = MaskedConv2d(2 * colors, 4 * colors, kernel, mask_type, colors).double()
    x = torch.randn(2, 2 * colors, 9, 11, dtype=torch.float64)
    full = F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=conv.padding)
    torch.testing.assert_close(conv(x), full, rtol=0, atol=1e-12)
    rows, cols = conv.kept
    assert conv.mask[:, :, rows:].abs().sum() == 0 and conv.mask[:, :, :, cols:].abs().sum() == 0


def test_pixelrnn_gate_convolution_masks_each_gate_block_by_its_hidden_unit():
    torch.manual_seed(0)
    conv = GateConv(6, 3, 3, colors=3).double()  # 4 gate blocks of 3 units, one per colour
    x = torch.randn(1, 6, 4, 5, dtype=torch.float64)
    full = F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=conv.padding)
    torch.testing.assert_close(conv(x), full, rtol=0, atol=1e-12)
    centre = conv.mask[:, :, 0, 1]  # [4 * 3 units, 6 inputs]: unit j of every block sees groups <= j
    torch.testing.assert_close(centre.view(4, 3, 6), centre[:3].expand(4, 3, 6))
