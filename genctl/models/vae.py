"""Variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014).

Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)), standard normal prior, and a Bernoulli
decoder for binarized pixels or a fixed-variance Gaussian decoder for intensities. Trained with
the reparametrization trick on the negative ELBO (``loss=elbo``).

``num_classes`` > 0 makes it the conditional VAE of Sohn, Lee & Yan, "Learning Structured Output
Representation using Deep Conditional Generative Models", NeurIPS 2015: the class, one-hot, joins
the encoder's image features where its dense layers begin, q(z | x, y), and the latent code at the
decoder's input, p(x | z, y). The prior stays N(0, I) rather than their learned p(z | y), as
the common class-conditional VAE of images has it (PyTorch-VAE's ``ConditionalVAE``), so every
bound and sampler of the plain VAE holds as it is; the bound is then on log p(x | y), and
``sample(n, y=...)`` draws the given classes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from genctl.errors import GenctlError
from genctl.models.base import MODELS, ClassConditional
from genctl.models.latent import LatentVariableModel
from genctl.nn.likelihoods import likelihood_for
from genctl.nn.nets import Architecture, Decoder, Encoder


@MODELS.register("vae")
class VAE(LatentVariableModel, ClassConditional):
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
        # configs/model/vae.yaml sets it; the default is only for runs stored before it existed, all unconditional
        num_classes: int = 0,
    ) -> None:
        super().__init__(data_shape, binary)
        if latent_dim < 1:  # the decoder also reads the label: its input alone would not say so
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: unconditional), got {num_classes}")
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.likelihood = likelihood_for(binary, observation, mixtures, obs_sigma)
        spec = Architecture(arch, channels, hidden, activation, downsample)
        self.encoder = Encoder(self.data_shape, spec, 2 * latent_dim, extra=num_classes)
        channels_out = self.likelihood.channels(self.data_shape[0])
        self.decoder = Decoder(self.data_shape, spec, latent_dim + num_classes, channels_out)

    def one_hot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The labels as the vector both networks read (None for an unconditional model).

        A conditional model cannot encode or draw without a class, and an unconditional one has
        nowhere to put it: either mistake is refused rather than silently ignored.
        """
        if not self.num_classes:
            if y is not None:
                raise ValueError("labels given to a model with num_classes=0")
            return None
        if y is None:
            raise GenctlError(
                f"this VAE is class-conditional (num_classes={self.num_classes}): pass the images' labels y "
                "(e.g. genctl.dataset(path).labels['test'])"
            )
        return F.one_hot(y.long(), self.num_classes).float()

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, self.one_hot(y)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        label = self.one_hot(y)
        return self.decoder(z if label is None else torch.cat([z, label.to(z.dtype)], -1))
