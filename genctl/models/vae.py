"""Variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014).

Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)), standard normal prior, and a Bernoulli
decoder for binarized pixels or a fixed-variance Gaussian decoder for intensities. Trained with
the reparametrization trick on the negative ELBO (``loss=elbo``).
"""

from __future__ import annotations

from typing import Literal

import torch

from genctl.models.base import MODELS
from genctl.models.latent import LatentVariableModel
from genctl.nn.likelihoods import likelihood_for
from genctl.nn.nets import Decoder, Encoder


@MODELS.register("vae")
class VAE(LatentVariableModel):
    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        arch: Literal["mlp", "conv"],
        latent_dim: int,
        hidden: list[int],
        channels: list[int],
        activation: str,
        obs_sigma: float,
    ) -> None:
        super().__init__(data_shape, binary)
        self.latent_dim = latent_dim
        self.encoder = Encoder(self.data_shape, arch, channels, hidden, 2 * latent_dim, activation)
        self.decoder = Decoder(self.data_shape, arch, channels, hidden, latent_dim, activation)
        self.likelihood = likelihood_for(binary, obs_sigma)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
