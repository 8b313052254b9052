"""Deterministic autoencoder: x -> code -> reconstruction, trained by mean squared error.

Not a density model, so it reports reconstruction MSE instead of a likelihood and cannot sample;
it can reconstruct and interpolate between codes.
"""

from __future__ import annotations

from typing import Literal

import torch

from genctl.models.base import MODELS, GenerativeModel
from genctl.models.nets import Decoder, Encoder


@MODELS.register("ae")
class Autoencoder(GenerativeModel):
    can_sample = False
    has_latents = True

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        arch: Literal["mlp", "conv"],
        latent_dim: int,
        hidden: list[int],
        channels: list[int],
        activation: str,
    ) -> None:
        super().__init__(data_shape, binary)
        self.latent_dim = latent_dim
        self.encoder = Encoder(self.data_shape, arch, channels, hidden, latent_dim, activation)
        self.decoder = Decoder(self.data_shape, arch, channels, hidden, latent_dim, activation)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def render(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.render(self.code(x))

    def metrics(self, x: torch.Tensor, k: int, chunk: int, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"mse": (self.reconstruct(x) - x).pow(2).flatten(1).mean(1)}
