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
from genctl.nn.nets import Architecture, Decoder, Encoder


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
        downsample: Literal["stride", "maxpool"],
        observation: Literal["logistic", "gaussian"],
        mixtures: int,
        obs_sigma: float,
    ) -> None:
        super().__init__(data_shape, binary)
        self.latent_dim = latent_dim
        self.likelihood = likelihood_for(binary, observation, mixtures, obs_sigma)
        spec = Architecture(arch, channels, hidden, activation, downsample)
        self.encoder = Encoder(self.data_shape, spec, 2 * latent_dim)
        self.decoder = Decoder(self.data_shape, spec, latent_dim, self.likelihood.channels(self.data_shape[0]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
