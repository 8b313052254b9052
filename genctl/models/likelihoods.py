"""Observation models p(x | decoder output): the per-image log-likelihood in nats.

Binarized pixels get a Bernoulli; continuous intensities in [0, 1] a Gaussian with fixed
standard deviation, whose negative log-likelihood is MSE / (2 sigma^2) plus a constant, which is
what "MSE-equivalent" means here (the constant is kept, so the numbers are true densities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Bernoulli:
    """Decoder outputs are logits, one per pixel."""

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x | logits) summed over pixels; logits may carry extra leading sample dims."""
        ll = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        return ll.flatten(-3).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian:
    """Decoder outputs are means; ``sigma`` is fixed (a config knob, not learned)."""

    def __init__(self, sigma: float) -> None:
        if sigma <= 0:
            raise ValueError(f"obs_sigma must be positive, got {sigma}")
        self.sigma = sigma

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        z = (x - mean) / self.sigma
        ll = -0.5 * z * z - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)
        return ll.flatten(-3).sum(-1)

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp(0.0, 1.0)


def likelihood_for(binary: bool, obs_sigma: float) -> Bernoulli | Gaussian:
    """Bernoulli for binarized data, Gaussian for continuous intensities."""
    return Bernoulli() if binary else Gaussian(obs_sigma)
