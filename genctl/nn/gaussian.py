"""Diagonal Gaussians given as (mean, log-variance): the latent densities of every VAE.

Elementwise, so callers sum over whatever their latent dimensions are (a vector, or a feature
map per group).
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mean: torch.Tensor | float, logvar: torch.Tensor | float) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) per element."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar))


def kl_normal(
    q_mean: torch.Tensor, q_logvar: torch.Tensor, p_mean: torch.Tensor | float, p_logvar: torch.Tensor | float
) -> torch.Tensor:
    """KL(N(q_mean, exp(q_logvar)) || N(p_mean, exp(p_logvar))) in nats per element; the prior
    may be a number (0, 0 for the standard normal)."""
    p_logvar = torch.as_tensor(p_logvar, dtype=q_mean.dtype, device=q_mean.device)
    return 0.5 * (p_logvar - q_logvar + (q_logvar.exp() + (q_mean - p_mean) ** 2) * torch.exp(-p_logvar) - 1)


def reparametrize(mean: torch.Tensor, logvar: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A sample of N(mean, exp(logvar)) that gradients flow through; ``scale`` multiplies the
    standard deviation (sampling temperature; 0 gives the mean).

    The noise is drawn in the standard (contiguous) layout whatever layout ``mean`` is kept in:
    the draws are then the same for channels-last maps, and eager and compiled code (Inductor's
    ``fallback_random``) take them alike; on a CPU, torch draws non-contiguous tensors one element
    at a time, which took a fifth of a channels-last hierarchical VAE's IWAE evaluation."""
    noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
    return mean + noise * torch.exp(0.5 * logvar) * scale
