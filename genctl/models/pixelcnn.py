"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML
2016, sections 3.4-3.5): a 7x7 mask-A convolution, residual blocks of 1x1 -> 3x3 mask-B -> 1x1
convolutions (``kernel``: the paper's 3; wider kernels reach more rows per block), and two 1x1
mask-B layers to the per-value logits (R -> G -> B for colour).

Its conditionals have a blind spot to the upper right (fixed by ``gated_pixelcnn``).

Sampling with ``fast=True`` is incremental ("Fast Generation for Convolutional Autoregressive
Models", Ramachandran et al. 2017): each masked convolution keeps its input map, and each step
computes every layer at the one new pixel only, instead of the whole image per value.
"""

from __future__ import annotations

import torch
from torch import nn

from genctl.models.autoregressive import AutoregressiveModel, tiny_ops
from genctl.models.base import MODELS
from genctl.nn.masked import MaskedConv2d, output_head, pointwise


class ResidualBlock(nn.Module):
    """ReLU -> 1x1 (2h -> h) -> ReLU -> k x k mask B -> ReLU -> 1x1 (h -> 2h), plus the input.

    Returns ``x + f(x)``; callers must not add ``x`` again.
    """

    def __init__(self, channels: int, colors: int, kernel: int) -> None:
        super().__init__()
        half = channels // 2
        self.f = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(channels, half, 1, "B", colors),
            nn.ReLU(),
            MaskedConv2d(half, half, kernel, "B", colors),
            nn.ReLU(),
            MaskedConv2d(half, channels, 1, "B", colors),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


@MODELS.register("pixelcnn")
class PixelCNN(AutoregressiveModel):
    bf16_gains_on = ("cpu",)  # 1.81x the float32 images/s on an AVX512_BF16 CPU (genctl.train.precision)

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        channels: int,
        blocks: int,
        first_kernel: int,
        kernel: int,
        head: int,
    ) -> None:
        super().__init__(data_shape, binary)
        colors = data_shape[0]
        if channels % (2 * colors) or head % colors:
            raise ValueError(f"channels must be divisible by {2 * colors} and head by {colors} (colour groups)")
        if kernel < 1 or kernel % 2 == 0 or first_kernel < 1 or first_kernel % 2 == 0:
            raise ValueError(f"kernel and first_kernel must be odd, got {kernel} and {first_kernel}")
        out = colors * (1 if binary else self.levels)
        self.net = nn.Sequential(
            MaskedConv2d(colors, channels, first_kernel, "A", colors),
            *(ResidualBlock(channels, colors, kernel) for _ in range(blocks)),
            *output_head(channels, head, out, colors),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_logits(self.net(x))

    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not fast:  # unconditional: y is always None here
            return super().complete(x, known, temperature, fast=False)
        x = x.clone()
        _, height, width = self.data_shape
        # The first convolution's input map is x itself, so each value drawn is seen from then
        # on. Deeper maps at a pixel are final once its last value is due: they depend on its
        # earlier values only (mask A at the centre).
        caches: dict[nn.Module, torch.Tensor] = {self.net[0]: x}
        with tiny_ops(x.device):
            for n, i in enumerate(self.order().tolist()):
                c, rest = divmod(i, height * width)
                h, w = divmod(rest, width)
                out = step(self.net, x[:, :, h, w], h, w, caches, x.shape)  # also fills the caches
                if n >= known:
                    x[:, c, h, w] = self.draw_value(out, c, temperature)
        return x


def step(module: nn.Module, v: torch.Tensor, h: int, w: int, caches: dict, shape: torch.Size) -> torch.Tensor:
    """``module``'s output at pixel (h, w), [B, channels], given its input there, ``v`` [B, channels].

    Convolutions wider than 1x1 write ``v`` into their cached input map first, then read the
    neighbourhood their mask allows, all of it computed at earlier steps.
    """
    if isinstance(module, nn.Sequential):
        for layer in module:
            v = step(layer, v, h, w, caches, shape)
        return v
    if isinstance(module, ResidualBlock):
        return v + step(module.f, v, h, w, caches, shape)
    if isinstance(module, nn.ReLU):
        return torch.relu(v)
    if isinstance(module, MaskedConv2d):
        if module.kernel_size == (1, 1):
            return pointwise(module, v)
        if module not in caches:
            caches[module] = v.new_zeros(shape[0], v.shape[1], shape[2], shape[3])
        caches[module][:, :, h, w] = v
        return module.at(caches[module], h, w)
    raise TypeError(f"no incremental step for {type(module).__name__}")
