"""Masked convolutions (van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural
Networks", ICML 2016, section 3.4).

A k x k kernel sees the rows above and the pixels to the left in its own row. At the centre
pixel, channels are split into ``colors`` groups (R, G, B for colour images; one group for
grey/binary): mask "A" lets group g see groups < g only (the first layer, which must not see the
value it predicts), mask "B" groups <= g (every later layer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def color_groups(channels: int, colors: int) -> torch.Tensor:
    """Group of every channel: contiguous blocks, so C*256 logits split as C blocks of 256."""
    return torch.arange(channels) * colors // channels


def causal_mask(
    out_channels: int, in_channels: int, kernel: tuple[int, int], mask_type: Literal["A", "B"], colors: int
) -> torch.Tensor:
    kh, kw = kernel
    mask = torch.ones(out_channels, in_channels, kh, kw)
    r, c = kh // 2, kw // 2
    mask[:, :, r + 1 :] = 0
    mask[:, :, r, c + 1 :] = 0
    g_out, g_in = color_groups(out_channels, colors), color_groups(in_channels, colors)
    allowed = g_out[:, None] > g_in[None, :] if mask_type == "A" else g_out[:, None] >= g_in[None, :]
    mask[:, :, r, c] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with "same" padding whose kernel (k x k, or kh x kw) is multiplied by a causal mask.

    The mask zeroes every row below the centre (and, in a one-row kernel, every column right of
    it): :meth:`forward` convolves only the kept rows and columns, over an input padded to match,
    so none of those multiplications by zero are done (a 7x7 kernel runs as 4x7). Same outputs
    as the full masked kernel, to float rounding.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], mask_type: Literal["A", "B"], colors: int
    ) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", causal_mask(out_channels, in_channels, (kh, kw), mask_type, colors), persistent=False)
        r, c = kh // 2, kw // 2
        self.kept = (r + 1, c + 1 if kh == 1 else kw)  # rows and columns of the kernel the mask keeps
        pad = (c, self.kept[1] - 1 - c, r, 0)  # left, right, top, bottom
        self.input_pad = pad if any(pad) else None

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.kept
        weight = self.weight[:, :, :rows, :cols] * self.mask[:, :, :rows, :cols]
        return F.conv2d(x if self.input_pad is None else F.pad(x, self.input_pad), weight, self.bias)

    def at(self, inputs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The output at pixel (h, w) alone, [B, out], from the input map [B, in, H, W].

        Only rows <= h are read (the mask zeroes the rest), so ``inputs`` needs to be filled in
        up to (h, w) in raster order: what incremental sampling has computed so far.
        """
        kh, kw = self.kernel_size
        r, c = kh // 2, kw // 2
        _, _, height, width = inputs.shape
        top, left, right = max(0, h - r), max(0, w - c), min(width, w + c + 1)
        patch = inputs[:, :, top : h + 1, left:right]
        kernel = self.masked_weight()[:, :, r - (h - top) : r + 1, c - (w - left) : c + (right - w)]
        return torch.einsum("bihw,oihw->bo", patch, kernel) + self.bias


def output_head(channels: int, head: int, out: int, colors: int) -> list[nn.Module]:
    """The PixelCNN paper's output stack over ``channels`` features: ReLU, a 1x1 mask-B convolution
    to ``head`` channels, ReLU, a 1x1 mask-B convolution to ``out`` logits (PixelCNN and PixelRNN)."""
    return [nn.ReLU(), MaskedConv2d(channels, head, 1, "B", colors), nn.ReLU(), MaskedConv2d(head, out, 1, "B", colors)]


def pointwise(conv: nn.Conv2d, v: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution (masked or not) at one pixel: [B, in] -> [B, out]."""
    weight = conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight
    return F.linear(v, weight[:, :, 0, 0], conv.bias)


def pointwise_stack(modules: Iterable[nn.Module], v: torch.Tensor) -> torch.Tensor:
    """A stack of ReLUs and 1x1 convolutions (an output head) at one pixel: [B, in] -> [B, out]."""
    for module in modules:
        v = torch.relu(v) if isinstance(module, nn.ReLU) else pointwise(module, v)
    return v
