"""Encoder and decoder networks shared by the autoencoder and the VAE.

``arch="mlp"``: flattened pixels -> dense layers (``hidden``).
``arch="conv"``: per entry of ``channels`` a stage that halves H and W, then dense layers
(``hidden``); the decoder mirrors it. ``downsample`` picks the stages' form:

- ``stride``: a 3x3 convolution, then a stride-2 4x4 convolution; the decoder a stride-2 4x4
  transposed convolution, then a 3x3 convolution. The resampling is learned (genctl's default).
- ``maxpool``: a 3x3 convolution, then 2x2 max-pooling; the decoder nearest-neighbour
  up-sampling, then two 3x3 convolutions (the classic "convolutions with max-pooling" encoder and
  "up-sampling convolutions" decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh}
# oneDNN's convolutions run faster on channels-last maps: the default conv VAE trains ~1.15x and
# evaluates its IWAE bound ~1.3x as fast on a CPU (1 thread) with its kernels in that layout
CONV_FORMAT = torch.channels_last


def mlp(sizes: list[int], activation: str, final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Architecture:
    """The options an encoder and its mirrored decoder share (a model's YAML keys)."""

    arch: Literal["mlp", "conv"]
    channels: list[int]
    hidden: list[int]
    activation: str
    downsample: Literal["stride", "maxpool"]

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch={self.arch} is not one of: mlp, conv")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation} is not one of: {', '.join(ACTIVATIONS)}")
        if self.downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample={self.downsample} is not one of: stride, maxpool")
        if any(size < 1 for size in [*self.channels, *self.hidden]):
            raise ValueError(f"every entry of channels={self.channels} and hidden={self.hidden} must be >= 1")

    def features(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The feature map between the convolutions and the dense layers (the image for mlp)."""
        c, h, w = shape
        if self.arch == "mlp":
            return c, h, w
        scale = 2 ** len(self.channels)
        if h % scale or w % scale:
            raise ValueError(f"arch=conv with {len(self.channels)} stages needs H and W divisible by {scale}, got {h}x{w}")
        return self.channels[-1], h // scale, w // scale

    def down(self, c_in: int, c_out: int) -> list[nn.Module]:
        act = ACTIVATIONS[self.activation]
        if self.downsample == "stride":
            return [nn.Conv2d(c_in, c_out, 3, 1, 1), act(), nn.Conv2d(c_out, c_out, 4, 2, 1), act()]
        return [nn.Conv2d(c_in, c_out, 3, 1, 1), act(), nn.MaxPool2d(2)]

    def up(self, c_in: int, c_out: int) -> list[nn.Module]:
        act = ACTIVATIONS[self.activation]
        if self.downsample == "stride":
            return [nn.ConvTranspose2d(c_in, c_in, 4, 2, 1), act(), nn.Conv2d(c_in, c_out, 3, 1, 1)]
        return [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_in, 3, 1, 1),
            act(),
            nn.Conv2d(c_in, c_out, 3, 1, 1),
        ]


class Encoder(nn.Module):
    """Image [B, C, H, W] -> vector [B, out_dim]. ``extra`` > 0: a vector [B, extra] (a one-hot
    class) joins the image features where the dense layers begin, so it reaches every dense layer
    of either architecture without widening the convolutions."""

    def __init__(self, shape: tuple[int, int, int], spec: Architecture, out_dim: int, extra: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if spec.arch == "conv":
            for c_in, c_out in zip([shape[0], *spec.channels], spec.channels):
                layers += spec.down(c_in, c_out)
        c, h, w = spec.features(shape)
        layers += [nn.Flatten(), mlp([c * h * w + extra, *spec.hidden, out_dim], spec.activation)]
        self.net = nn.Sequential(*layers).to(memory_format=CONV_FORMAT)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if extra is None:
            return self.net(x)
        features = self.net[:-1](x)  # the convolutions and the flattening
        return self.net[-1](torch.cat([features, extra.to(features.dtype)], 1))


class Decoder(nn.Module):
    """Vector [B, in_dim] -> per-pixel outputs [B, out_channels, H, W] (logits, means, or an
    observation model's parameters)."""

    def __init__(self, shape: tuple[int, int, int], spec: Architecture, in_dim: int, out_channels: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {in_dim}")
        c, h, w = (out_channels, *shape[1:]) if spec.arch == "mlp" else spec.features(shape)
        dense = mlp([in_dim, *reversed(spec.hidden), c * h * w], spec.activation, final_activation=spec.arch == "conv")
        layers: list[nn.Module] = [dense, nn.Unflatten(1, (c, h, w))]
        if spec.arch == "conv":
            outs = [*reversed(spec.channels[:-1]), out_channels]
            for i, (c_in, c_out) in enumerate(zip(reversed(spec.channels), outs)):
                layers += spec.up(c_in, c_out)
                if i < len(spec.channels) - 1:
                    layers.append(ACTIVATIONS[spec.activation]())
        self.net = nn.Sequential(*layers).to(memory_format=CONV_FORMAT)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
