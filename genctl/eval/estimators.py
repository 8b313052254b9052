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

from collections.abc import Callable
from typing import Any

import torch

from genctl.models.base import ExactLikelihood, GenerativeModel, LatentLikelihood, Likelihood, Reconstructs
from genctl.nn.functional import log_mean_exp
from genctl.runs.record import NLL_ELBO, NLL_EXACT, NLL_IWAE

LogWeights = Callable[[torch.Tensor, int, Any, Any], torch.Tensor]  # LatentLikelihood.log_weights, or a compiled one


def iwae_log_likelihood(
    model: LatentLikelihood,
    x: torch.Tensor,
    k: int,
    chunk: int,
    log_weights: LogWeights | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """IWAE_k lower bound on log p(x) per image [B], from ``model.log_weights`` ([m, B] values of
    log p(x, z) - log q(z | x), z ~ q(z | x)) drawn ``chunk`` at a time, the encoder run once.
    ``log_weights``: the same pass in another form (compiled: :func:`compiled_log_weights`).
    ``y``: class labels of a conditional model, whose bound is on log p(x | y)."""
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    weights = log_weights or model.log_weights
    encoding = model.encoding(x, y)
    chunks = [weights(x, min(chunk, k - start), encoding, y) for start in range(0, k, chunk)]
    return log_mean_exp(torch.cat(chunks), dim=0)


def compiled_log_weights(model: LatentLikelihood) -> LogWeights:
    """``model.log_weights`` through ``torch.compile``: the pass runs k / chunk times per batch,
    so fusing its elementwise work pays for the compilation (scripts/bench_eval.py).
    Inductor's ``fallback_random`` keeps torch's own random draws, so the weights, and the IWAE
    bound, equal eager evaluation's to float tolerance; shapes are static (a batch's last chunk
    or a split's last batch compiles once more)."""
    return torch.compile(model.log_weights, dynamic=False, options={"fallback_random": True})


def estimates(
    model: GenerativeModel,
    x: torch.Tensor,
    k: int,
    chunk: int,
    y: torch.Tensor | None = None,
    log_weights: LogWeights | None = None,
) -> dict[str, torch.Tensor]:
    """Every estimate that applies to ``model``, one tensor [B] each: ``nll_exact``; ``nll_elbo``,
    ``nll_iwae`` (``k`` importance samples, ``chunk`` at a time, through ``log_weights`` where
    given) and ``kl``; or ``mse`` and ``psnr``. ``y``: class labels of a conditional model, whose
    numbers are then of p(x | y)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(model, ExactLikelihood):
        out[NLL_EXACT] = -model.log_prob(x, y)
    if isinstance(model, LatentLikelihood):
        log_px_z, kl = model.elbo_terms(x, y)
        kl = kl.sum(1)
        iwae = iwae_log_likelihood(model, x, k, chunk, log_weights, y)
        out.update({NLL_ELBO: kl - log_px_z, NLL_IWAE: -iwae, "kl": kl})
    if isinstance(model, Reconstructs) and not isinstance(model, Likelihood):
        out["mse"] = (model.reconstruct(x, y) - x).pow(2).flatten(1).mean(1)
        out["psnr"] = -10 * torch.log10(out["mse"].clamp_min(1e-10))  # dB, intensities in [0, 1]
    return out
