"""Latent-variable models with a Gaussian posterior q(z|x) and a standard normal prior.

What the VAE family shares: the reparametrized posterior sample, the analytic KL, the
importance weights behind the IWAE bound, prior sampling with a temperature, reconstruction.
"""

from __future__ import annotations

import torch

from genctl.models.base import GenerativeModel, LatentLikelihood, ObservationModel, Reconstructs, Sampler
from genctl.nn.gaussian import kl_normal, log_normal, reparametrize


class LatentVariableModel(GenerativeModel, LatentLikelihood, Sampler, Reconstructs):
    """Subclasses set ``self.latent_dim`` and ``self.likelihood`` and implement encode/decode."""

    latent_dim: int
    likelihood: ObservationModel

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) as (mean, log-variance), each [B, latent_dim]."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, C, H, W] parametrizing p(x|z) for ``self.likelihood``."""
        raise NotImplementedError

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        log_px_z = self.likelihood.log_prob(x, self.decode(reparametrize(mu, logvar)))
        return log_px_z, kl_normal(mu, logvar, 0.0, 0.0).sum(-1, keepdim=True)

    def encoding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(x)

    def log_weights(self, x: torch.Tensor, k: int, encoding: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        mu, logvar = self.encode(x) if encoding is None else encoding
        mu, logvar = mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape)
        z = reparametrize(mu, logvar)  # [k, B, latent_dim]
        log_px_z = self.likelihood.log_prob(x, self.decode(z.flatten(0, 1)).unflatten(0, (k, x.shape[0])))
        return log_px_z + (log_normal(z, 0.0, 0.0) - log_normal(z, mu, logvar)).sum(-1)

    def group_sizes(self) -> torch.Tensor:
        return torch.tensor([float(self.latent_dim)])

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) for z ~ N(0, temperature^2 I): the usual way to show VAE samples.

        One decoder pass, so ``fast`` changes nothing.
        """
        z = torch.randn(n, self.latent_dim, device=self.device) * temperature
        return self.render(z)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean."""
        return self.encode(x)[0]

    def render(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z)."""
        return self.likelihood.mean(self.decode(z))
