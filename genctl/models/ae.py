"""Deterministic autoencoder: x -> code -> reconstruction, trained by mean squared error.

Not a density model (it declares no likelihood and is no ``Sampler``), so evaluation reports its
reconstruction MSE instead; it can reconstruct and interpolate between codes.
"""

from __future__ import annotations

from typing import Literal

import torch

from genctl.models.base import MODELS, Encodes, GenerativeModel, Reconstructs
from genctl.nn.nets import Architecture, Decoder, Encoder


@MODELS.register("ae")
class Autoencoder(GenerativeModel, Reconstructs, Encodes):
    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        arch: Literal["mlp", "conv"],
        latent_dim: int,
        hidden: list[int],
        channels: list[int],
        activation: str,
        downsample: Literal["stride", "maxpool"],
    ) -> None:
        super().__init__(data_shape, binary)
        self.latent_dim = latent_dim
        spec = Architecture(arch, channels, hidden, activation, downsample)
        self.encoder = Encoder(self.data_shape, spec, latent_dim)
        self.decoder = Decoder(self.data_shape, spec, latent_dim, self.data_shape[0])

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """The code, with no variance: the encoder is deterministic."""
        return self.encoder(x), None

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)

    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))
