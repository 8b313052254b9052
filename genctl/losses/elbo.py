"""Negative evidence lower bound, the VAE objective (Kingma & Welling 2014, eq. 3 and 10).

    loss = E_q(z|x)[-log p(x|z)] + beta_t * sum_l gamma_l KL_l + penalty,
    beta_t = beta * min(1, step / kl_warmup_steps)

Scaling, stated once: both terms are nats per image (summed over pixels and latent dimensions)
and averaged over the images of the batch, so the number does not change with batch or dataset
size. ``recon`` and ``kl`` are logged as positive nats per image; ``nelbo`` = recon + kl is the
true bound (beta = 1), whatever beta is trained with.

KL_l is the KL of latent group l (one group in a plain VAE). With ``balance``, while the KL
weight is still warming up, gamma_l is proportional to group l's batch-mean KL per latent unit
(its KL divided by its size), normalized to average 1 (NVAE, Vahdat & Kautz 2020, appendix A, as
its code computes it: the paper's "multiplied by the size" is a typo its author confirmed): a
group whose KL per unit stays small is penalized less and is not switched off early; groups with
equal KL per unit are weighted equally. Otherwise every gamma_l = 1. ``penalty`` is the
model's own training regularizer (NVAE's spectral term), added in training steps only.
"""

from __future__ import annotations

import torch

from genctl.losses import LOSSES
from genctl.models.base import LatentLikelihood


@LOSSES.register("elbo")
class ELBO:
    requires = LatentLikelihood

    def __init__(self, beta: float, kl_warmup_steps: int, balance: bool) -> None:
        if beta < 0 or kl_warmup_steps < 0:
            raise ValueError("beta and kl_warmup_steps must be >= 0")
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.balance = balance

    def kl_weight(self, step: int | None) -> float:
        if step is None or self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def group_weights(self, kl: torch.Tensor, sizes: torch.Tensor, step: int | None) -> torch.Tensor:
        """gamma_l for the batch's per-group KLs [B, groups]; no gradient flows through them."""
        if not self.balance or step is None or step >= self.kl_warmup_steps:
            return torch.ones(kl.shape[1], device=kl.device)
        gamma = (kl.detach().mean(0) + 0.01) / sizes
        return gamma / gamma.mean()

    def __call__(
        self, model: LatentLikelihood, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        log_px_z, kl = model.elbo_terms(x, y)
        gamma = self.group_weights(kl, model.group_sizes().to(kl), step)
        recon, kl_groups = -log_px_z.mean(), kl.mean(0)
        kl_total = kl_groups.sum()
        loss = recon + self.kl_weight(step) * (gamma * kl_groups).sum()
        if step is not None:
            loss = loss + model.penalty()
        out = {"loss": loss, "recon": recon, "kl": kl_total, "nelbo": recon + kl_total}
        if len(kl_groups) > 1:
            out.update({f"kl_group{g}": value for g, value in enumerate(kl_groups)})
        return out
