"""Mean squared reconstruction error, averaged over pixels and images."""

from __future__ import annotations

import torch

from genctl.losses import LOSSES
from genctl.models.base import Reconstructs


@LOSSES.register("mse")
class MSE:
    requires = Reconstructs

    def __call__(
        self, model: Reconstructs, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        mse = (model.reconstruct(x, y) - x).pow(2).mean()
        return {"loss": mse, "mse": mse}
