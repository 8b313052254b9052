"""Latent-variable models with a Gaussian posterior q(z|x) and a standard normal prior.

What the VAE family shares: the reparametrized posterior sample, the analytic KL, the
importance weights behind the IWAE bound, prior sampling with a temperature, reconstruction.
Class labels ``y`` go to :meth:`~LatentVariableModel.encode` and
:meth:`~LatentVariableModel.decode` alike, so a conditional model (Sohn, Lee & Yan 2015) bounds
log p(x | y) with q(z | x, y), p(z) and p(x | z, y) in the same formulas.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from genctl.models.base import Encodes, GenerativeModel, LatentLikelihood, ObservationModel, Reconstructs, Sampler
from genctl.nn.gaussian import kl_normal, log_normal, reparametrize


class LatentVariableModel(GenerativeModel, LatentLikelihood, Sampler, Reconstructs, Encodes):
    """Subclasses set ``self.latent_dim`` and ``self.likelihood`` and implement encode/decode."""

    latent_dim: int
    likelihood: ObservationModel

    @abstractmethod
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) (q(z|x, y) with labels) as (mean, log-variance), each [B, latent_dim]."""

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output [B, C, H, W] parametrizing p(x|z) (p(x|z, y) with labels) for ``self.likelihood``."""
        raise NotImplementedError

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode`, given the labels only where there are some: a model without classes may take ``x`` alone."""
        return self.encode(x) if y is None else self.encode(x, y)

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """:meth:`decode`, given the labels only where there are some."""
        return self.decode(z) if y is None else self.decode(z, y)

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self._encode(x, y)
        log_px_z = self.likelihood.log_prob(x, self._decode(reparametrize(mu, logvar), y))
        return log_px_z, kl_normal(mu, logvar, 0.0, 0.0).sum(-1, keepdim=True)

    def encoding(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(x, y)

    def log_weights(
        self,
        x: torch.Tensor,
        k: int,
        encoding: tuple[torch.Tensor, torch.Tensor] | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mu, logvar = self._encode(x, y) if encoding is None else encoding
        mu, logvar = mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape)
        z = reparametrize(mu, logvar)  # [k, B, latent_dim]
        labels = None if y is None else y.repeat(k)  # sample-major, as z.flatten(0, 1)
        log_px_z = self.likelihood.log_prob(x, self._decode(z.flatten(0, 1), labels).unflatten(0, (k, x.shape[0])))
        return log_px_z + (log_normal(z, 0.0, 0.0) - log_normal(z, mu, logvar)).sum(-1)

    def group_sizes(self) -> torch.Tensor:
        return torch.tensor([float(self.latent_dim)])

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) for z ~ N(0, temperature^2 I): the usual way to show VAE samples.

        One decoder pass, so ``fast`` changes nothing. ``y``: the classes drawn (conditional models).
        """
        z = torch.randn(n, self.latent_dim, device=self.device) * temperature
        return self.render(z, y)

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean."""
        return self._encode(x, y)[0]

    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z)."""
        return self.likelihood.mean(self._decode(z, y))
