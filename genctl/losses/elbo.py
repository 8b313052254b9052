"""Negative evidence lower bound, the VAE objective (Kingma & Welling 2014, eq. 3 and 10).

    loss = E_q(z|x)[-log p(x|z)] + beta_t * KL(q(z|x) || p(z)),   beta_t = beta * min(1, step / warmup_steps)

Scaling, stated once: both terms are nats per image (summed over pixels and latent dimensions)
and averaged over the images of the batch, so the number does not change with batch or dataset
size. ``recon`` and ``kl`` are logged as positive nats per image; ``nelbo`` = recon + kl is the
true bound (beta = 1), whatever beta is trained with.
"""

from __future__ import annotations

import torch

from genctl.losses import LOSSES
from genctl.models.latent import LatentVariableModel


@LOSSES.register("elbo")
class ELBO:
    requires = LatentVariableModel

    def __init__(self, beta: float, warmup_steps: int) -> None:
        if beta < 0 or warmup_steps < 0:
            raise ValueError("beta and warmup_steps must be >= 0")
        self.beta = beta
        self.warmup_steps = warmup_steps

    def kl_weight(self, step: int | None) -> float:
        if step is None or self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.warmup_steps)

    def __call__(
        self, model: LatentVariableModel, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        log_px_z, kl = model.elbo_terms(x)
        recon, kl = -log_px_z.mean(), kl.mean()
        return {"loss": recon + self.kl_weight(step) * kl, "recon": recon, "kl": kl, "nelbo": recon + kl}
