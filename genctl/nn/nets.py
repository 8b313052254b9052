"""Encoder and decoder networks shared by the autoencoder and the VAEs.

``arch="mlp"``: flattened pixels -> dense layers (``hidden``).
``arch="conv"``: per entry of ``channels`` a 3x3 conv then a stride-2 4x4 conv (halving H and W),
then dense layers (``hidden``); the decoder mirrors it with transposed convs.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(sizes: list[int], activation: str, final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _feature_shape(shape: tuple[int, int, int], arch: str, channels: list[int]) -> tuple[int, int, int]:
    c, h, w = shape
    if arch == "mlp":
        return c, h, w
    scale = 2 ** len(channels)
    if h % scale or w % scale:
        raise ValueError(f"arch=conv with {len(channels)} stages needs H and W divisible by {scale}, got {h}x{w}")
    return channels[-1], h // scale, w // scale


def check_arch(arch: str, activation: str, channels: list[int], hidden: list[int]) -> None:
    if arch not in ("mlp", "conv"):
        raise ValueError(f"arch={arch} is not one of: mlp, conv")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation} is not one of: {', '.join(ACTIVATIONS)}")
    if any(size < 1 for size in [*channels, *hidden]):
        raise ValueError(f"every entry of channels={channels} and hidden={hidden} must be >= 1")


class Encoder(nn.Module):
    """Image [B, C, H, W] -> vector [B, out_dim]."""

    def __init__(
        self, shape: tuple[int, int, int], arch: str, channels: list[int], hidden: list[int], out_dim: int, activation: str
    ) -> None:
        super().__init__()
        check_arch(arch, activation, channels, hidden)
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        if arch == "conv":
            prev = shape[0]
            for ch in channels:
                layers += [nn.Conv2d(prev, ch, 3, 1, 1), act(), nn.Conv2d(ch, ch, 4, 2, 1), act()]
                prev = ch
        layers.append(nn.Flatten())
        feat = _feature_shape(shape, arch, channels)
        layers.append(mlp([feat[0] * feat[1] * feat[2], *hidden, out_dim], activation))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Vector [B, in_dim] -> per-pixel outputs [B, C, H, W] (logits or means)."""

    def __init__(
        self, shape: tuple[int, int, int], arch: str, channels: list[int], hidden: list[int], in_dim: int, activation: str
    ) -> None:
        super().__init__()
        check_arch(arch, activation, channels, hidden)
        if in_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {in_dim}")
        act = ACTIVATIONS[activation]
        feat = _feature_shape(shape, arch, channels)
        dense = mlp([in_dim, *reversed(hidden), feat[0] * feat[1] * feat[2]], activation, final_activation=arch == "conv")
        layers: list[nn.Module] = [dense, nn.Unflatten(1, feat)]
        if arch == "conv":
            outs = [*reversed(channels[:-1]), shape[0]]
            for i, (ch, out) in enumerate(zip(reversed(channels), outs)):
                layers += [nn.ConvTranspose2d(ch, ch, 4, 2, 1), act(), nn.Conv2d(ch, out, 3, 1, 1)]
                if i < len(channels) - 1:
                    layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
