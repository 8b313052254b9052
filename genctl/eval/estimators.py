"""Per-image estimates of what a model declares it can score, in nats.

- exact: -log p(x) of an :class:`~genctl.models.base.ExactLikelihood` model.
- ELBO and IWAE-k (Burda, Grosse & Salakhutdinov, 2016) of a
  :class:`~genctl.models.base.LatentLikelihood` model::

      log p(x) >= IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)] >= ELBO = IWAE_1,

  and IWAE_k -> log p(x) as k grows. The k samples are drawn ``chunk`` at a time, so memory is
  bounded by ``chunk`` decoder passes and not by ``k``.
- MSE per pixel and PSNR in dB (10 log10(1 / MSE), per image) of a model with no likelihood that
  reconstructs (an autoencoder).
"""

from __future__ import annotations

import torch

from genctl.models.base import ExactLikelihood, GenerativeModel, LatentLikelihood, Likelihood, Reconstructs
from genctl.nn.functional import log_mean_exp


def iwae_log_likelihood(model: LatentLikelihood, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """IWAE_k lower bound on log p(x) per image [B], from ``model.log_weights`` ([m, B] values of
    log p(x, z) - log q(z | x), z ~ q(z | x)) drawn ``chunk`` at a time, the encoder run once."""
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    encoding = model.encoding(x)
    chunks = [model.log_weights(x, min(chunk, k - start), encoding) for start in range(0, k, chunk)]
    return log_mean_exp(torch.cat(chunks), dim=0)


def estimates(
    model: GenerativeModel, x: torch.Tensor, k: int, chunk: int, y: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Every estimate that applies to ``model``, one tensor [B] each: ``nll_exact``; ``nll_elbo``,
    ``nll_iwae`` (``k`` importance samples, ``chunk`` at a time) and ``kl``; or ``mse`` and ``psnr``."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(model, ExactLikelihood):
        out["nll_exact"] = -model.log_prob(x, y)
    if isinstance(model, LatentLikelihood):
        log_px_z, kl = model.elbo_terms(x)
        kl = kl.sum(1)
        out.update(nll_elbo=kl - log_px_z, nll_iwae=-iwae_log_likelihood(model, x, k, chunk), kl=kl)
    if isinstance(model, Reconstructs) and not isinstance(model, Likelihood):
        out["mse"] = (model.reconstruct(x) - x).pow(2).flatten(1).mean(1)
        out["psnr"] = -10 * torch.log10(out["mse"].clamp_min(1e-10))  # dB, intensities in [0, 1]
    return out
