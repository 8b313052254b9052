"""Small numerical helpers shared by models, losses and estimators."""

from __future__ import annotations

import math

import torch


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log(mean(exp(x))) along ``dim`` without overflow: the IWAE bound's average of importance
    weights, and the likelihood of an equal-weight mixture of exact models."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])
