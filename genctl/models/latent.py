"""Latent-variable models with a Gaussian posterior q(z|x) and a standard normal prior.

What the VAE family shares: the reparametrized posterior sample, the analytic KL, the
importance weights behind the IWAE bound, prior sampling with a temperature, reconstruction.
"""

from __future__ import annotations

import math

import torch

from genctl.eval.bounds import iwae_log_likelihood
from genctl.models.base import GenerativeModel

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats, summed over the last dim."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)


class LatentVariableModel(GenerativeModel):
    """Subclasses set ``self.latent_dim``, ``self.likelihood`` and implement encode/decode."""

    has_latents = True

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) as (mean, log-variance), each [B, latent_dim]."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, C, H, W] parametrizing p(x|z) for ``self.likelihood``."""
        raise NotImplementedError

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z) for one reparametrized z ~ q(z|x) [B], KL(q(z|x) || p(z)) per latent group
        [B, groups]) in nats; one group here, several in hierarchical models."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.likelihood.log_prob(x, self.decode(z)), kl_to_standard_normal(mu, logvar).unsqueeze(1)

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """[k, B] of log p(x, z_i) - log q(z_i | x) for z_i ~ q(z|x)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn((k, *mu.shape), device=mu.device, dtype=mu.dtype) * torch.exp(0.5 * logvar)
        out = self.decode(z.flatten(0, 1)).unflatten(0, (k, x.shape[0]))
        log_px_z = self.likelihood.log_prob(x, out)
        log_pz = -0.5 * (LOG_2PI + z**2).sum(-1)
        return log_px_z + log_pz - gaussian_log_prob(z, mu, logvar)

    def group_sizes(self) -> torch.Tensor:
        """Latent units of each group (what KL balancing weighs by)."""
        return torch.tensor([float(self.latent_dim)])

    def penalty(self) -> torch.Tensor | float:
        """A regularizer the training losses add (none by default)."""
        return 0.0

    def metrics(self, x: torch.Tensor, k: int, chunk: int, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        log_px_z, kl = self.elbo_terms(x)
        kl = kl.sum(1)
        return {
            "nll_elbo": kl - log_px_z,
            "nll_iwae": -iwae_log_likelihood(self.log_weights, x, k, chunk),
            "kl": kl,
        }

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) for z ~ N(0, temperature^2 I): the usual way to show VAE samples.

        One decoder pass, so ``fast`` changes nothing.
        """
        z = torch.randn(n, self.latent_dim, device=self.device) * temperature
        return self.likelihood.mean(self.decode(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at the posterior mean of z."""
        return self.likelihood.mean(self.decode(self.encode(x)[0]))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """A point in latent space for ``x`` (the posterior mean), for interpolation."""
        return self.encode(x)[0]

    def render(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decode(z))
