"""Importance-weighted objective (Burda, Grosse & Salakhutdinov, "Importance Weighted
Autoencoders", ICLR 2016): minimize -IWAE_k, a bound on -log p(x) that tightens as k grows
(k = 1 is the negative ELBO). The posterior then only has to propose well, not to match p(z|x).

Nats per image averaged over the batch, like ``elbo``. Costs k decoder passes per image.
"""

from __future__ import annotations

import torch

from genctl.losses import LOSSES
from genctl.models.base import LatentLikelihood
from genctl.nn.functional import log_mean_exp


@LOSSES.register("iwae")
class IWAE:
    requires = LatentLikelihood

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(
        self, model: LatentLikelihood, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        bound = log_mean_exp(model.log_weights(x, self.k, y=y), dim=0).mean()
        loss = -bound if step is None else -bound + model.penalty()
        return {"loss": loss, "niwae": -bound}
