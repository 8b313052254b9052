"""Exact negative log-likelihood of models that have one (autoregressive models) (maximum likelihood, the seed's eq. 2).

Nats per image (summed over the C*H*W conditionals), averaged over the batch.
"""

from __future__ import annotations

import torch

from genctl.losses import LOSSES
from genctl.models.base import ExactLikelihood


@LOSSES.register("ar_nll")
class AutoregressiveNLL:
    requires = ExactLikelihood

    def __call__(
        self, model: ExactLikelihood, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        nll = -model.log_prob(x, y).mean()
        return {"loss": nll, "nll": nll}
