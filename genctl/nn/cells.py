"""NVAE's building blocks (Vahdat & Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder",
NeurIPS 2020, section 3.1 and figure 3), each with the switch its ablation needs.

- :class:`Cell`: a residual cell, x + f(x). ``separable=False`` is NVAE's encoder cell
  (BN-Swish-conv3x3, twice); ``separable=True`` its generative cell (BN-conv1x1 expanding 3x,
  BN-Swish-depthwise conv5x5, BN-Swish-conv1x1, BN), which widens the receptive field cheaply.
  Both end in squeeze-and-excitation when ``se``; ``batchnorm=False`` drops every BN. A
  convolution that feeds a BatchNorm has no bias: the BN's mean subtraction would cancel it.
- :func:`spectral_penalty`: the sum of the largest singular values of every convolution, each
  estimated by power iteration (NVAE section 3.2, "spectral regularization"): it bounds how
  sharply the encoder's output, and so the KL, can change with its input. As in NVAE's code, a
  few iterations per training step continue from the last step's vectors, and the first step runs
  ten times as many from their random start.
- :func:`batchnorm_penalty`: NVAE's penalty on BatchNorm scales (the largest |gamma| of every
  BatchNorm), which keeps BN from undoing what the spectral term bounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features (Hu et al. 2018)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 4, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean((2, 3)))[:, :, None, None]


def norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class Cell(nn.Module):
    """Residual cell, x + f(x), on ``channels`` feature maps of any size."""

    def __init__(self, channels: int, separable: bool, batchnorm: bool, se: bool) -> None:
        super().__init__()
        if separable:
            wide = 3 * channels
            layers = [
                norm(channels, batchnorm),
                nn.Conv2d(channels, wide, 1, bias=not batchnorm),
                norm(wide, batchnorm),
                nn.SiLU(),
                nn.Conv2d(wide, wide, 5, padding=2, groups=wide, bias=not batchnorm),
                norm(wide, batchnorm),
                nn.SiLU(),
                nn.Conv2d(wide, channels, 1, bias=not batchnorm),
                norm(channels, batchnorm),
            ]
        else:
            layers = [
                norm(channels, batchnorm),
                nn.SiLU(),
                nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm),
                norm(channels, batchnorm),
                nn.SiLU(),
                nn.Conv2d(channels, channels, 3, padding=1),
            ]
        if se:
            layers.append(SqueezeExcite(channels))
        self.f = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


def add_spectral_state(model: nn.Module, generator: torch.Generator) -> None:
    """Give every convolution a persistent power-iteration vector, and the model a flag for the
    first step's longer warm-up (both saved in checkpoints, so a resumed run continues the same
    estimates)."""
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        u = torch.randn(conv.out_channels, generator=generator)
        conv.register_buffer("spectral_u", u / u.norm())
    model.register_buffer("spectral_started", torch.zeros((), dtype=torch.bool))


def spectral_penalty(model: nn.Module, iterations: int) -> torch.Tensor:
    """Sum over convolutions of sigma_max(W), W flattened to [out, in * kh * kw]; ``iterations``
    power iterations per call (ten times as many on the first) refine each estimate, and gradients
    flow through sigma, not the vectors."""
    if not bool(model.spectral_started):
        iterations *= 10
        model.spectral_started.fill_(True)
    total = torch.zeros((), device=next(model.parameters()).device)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        w = conv.weight.flatten(1)
        with torch.no_grad():
            for _ in range(iterations):
                v = F.normalize(w.t() @ conv.spectral_u, dim=0)
                conv.spectral_u.copy_(F.normalize(w @ v, dim=0))
        total = total + conv.spectral_u @ w @ v
    return total


def batchnorm_penalty(model: nn.Module) -> torch.Tensor:
    """Sum over BatchNorm layers of their largest |scale| (NVAE's ``batchnorm_loss``)."""
    scales = [m.weight.abs().max() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return torch.stack(scales).sum() if scales else torch.zeros((), device=next(model.parameters()).device)
