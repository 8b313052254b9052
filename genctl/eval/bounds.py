"""Importance-weighted bounds on log p(x) (Burda, Grosse & Salakhutdinov, 2016).

    log p(x) >= IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)] >= ELBO = IWAE_1,

and IWAE_k -> log p(x) as k grows. The k samples are drawn ``chunk`` at a time so memory is
bounded by ``chunk`` and not by ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LogWeights = Callable[[torch.Tensor, int], torch.Tensor]


def iwae_log_likelihood(log_weights: LogWeights, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """IWAE_k lower bound on log p(x) per image [B].

    ``log_weights(x, m)`` returns [m, B] values of log p(x, z) - log q(z | x), z ~ q(z | x).
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    total = None
    for start in range(0, k, chunk):
        lse = torch.logsumexp(log_weights(x, min(chunk, k - start)), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(k)
