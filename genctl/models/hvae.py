"""Deep hierarchical VAE in the spirit of NVAE (Vahdat & Kautz, "NVAE: A Deep Hierarchical
Variational Autoencoder", NeurIPS 2020), sized to train on a CPU.

    p(x, z) = p(x | z) prod_l p(z_l | z_<l),    q(z | x) = prod_l q(z_l | x, z_<l)

Latent groups z_1 (top) .. z_L are feature maps at ``scales`` resolutions below the input's
(``groups_per_scale`` at each, coarsest first). A bottom-up encoder computes one feature map per
group; a top-down path, shared by the prior and the posterior, starts from a learned constant and
for each group (1) reads the prior p(z_l | z_<l) off its state (the top group's is N(0, I)),
(2) reads the posterior from its state and the group's encoder features, (3) merges a sample of
z_l back into its state, then runs residual cells (:mod:`genctl.nn.cells`). So the ELBO's
KL is a sum of per-group KLs, each analytic given the samples above it.

Switches for ablation: ``residual_posterior`` (NVAE eq. 2: q as a shift and rescaling of the prior,
mu_q = mu_p + d_mu, sigma_q = sigma_p * d_sigma, instead of its own parameters), ``separable``
generative cells, ``batchnorm``, ``se``, ``spectral`` (the spectral-regularization weight) and its
``power_iterations``, ``bn_penalty`` (NVAE's penalty on BatchNorm scales) and ``soft_clamp`` (NVAE's
c * tanh(. / c) on every Gaussian's mean and log standard deviation). KL warm-up and balancing
across groups are options of ``loss=elbo``. Not taken from NVAE: weight normalization (its
convolutions carry it; here BatchNorm and the spectral term do that work) and residual cells that
change resolution (here a strided convolution down, a transposed one up). Binarized data get a Bernoulli
decoder, 8-bit data a discretized logistic mixture (``mixtures`` components).

With one group (``scales: 1``, ``groups_per_scale: 1``) this is a plain conv VAE: :meth:`encode` and
:meth:`decode` give its posterior and decoder, and the hierarchical ELBO equals the plain one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genctl.models.base import MODELS
from genctl.models.latent import LatentVariableModel
from genctl.nn.cells import Cell, add_spectral_state, batchnorm_penalty, spectral_penalty
from genctl.nn.gaussian import kl_normal, log_normal, reparametrize
from genctl.nn.likelihoods import Bernoulli, DiscretizedLogisticMixture

Gaussian = tuple[torch.Tensor, torch.Tensor]  # (mean, log-variance), each [B, C, H, W]


def gaussian_kl(q: Gaussian, p: Gaussian) -> torch.Tensor:
    """KL(q || p) in nats per image [B]."""
    return kl_normal(*q, *p).flatten(1).sum(1)


def gaussian_log_density(z: torch.Tensor, d: Gaussian) -> torch.Tensor:
    """log d(z) in nats per image [B]."""
    return log_normal(z, *d).flatten(1).sum(1)


@MODELS.register("hvae")
class HVAE(LatentVariableModel):
    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        channels: int,
        scales: int,
        groups_per_scale: int,
        latent_channels: int,
        cells: int,
        separable: bool,
        batchnorm: bool,
        se: bool,
        residual_posterior: bool,
        spectral: float,
        power_iterations: int,
        bn_penalty: float,
        soft_clamp: float,
        mixtures: int,
    ) -> None:
        super().__init__(data_shape, binary)
        colors, height, width = self.data_shape
        counts = (scales, groups_per_scale, channels, latent_channels, power_iterations)
        if min(counts) < 1 or min(cells, spectral, bn_penalty, soft_clamp) < 0:
            raise ValueError(
                "scales, groups_per_scale, channels, latent_channels, power_iterations must be >= 1; "
                "cells, spectral, bn_penalty, soft_clamp >= 0"
            )
        if height % 2**scales or width % 2**scales:
            raise ValueError(f"{scales} scales halve H and W {scales} times: {height}x{width} is not divisible by {2**scales}")
        self.likelihood = Bernoulli() if binary else DiscretizedLogisticMixture(mixtures)
        self.residual_posterior = residual_posterior
        self.spectral, self.power_iterations = spectral, power_iterations
        self.bn_penalty, self.soft_clamp = bn_penalty, soft_clamp
        groups = scales * groups_per_scale
        # scale of each group, top-down: 0 is the coarsest (H / 2**scales)
        self.group_scale = [g // groups_per_scale for g in range(groups)]
        top = (height // 2**scales, width // 2**scales)
        self.group_shapes = [(latent_channels, top[0] * 2**s, top[1] * 2**s) for s in self.group_scale]
        self.latent_dim = sum(math.prod(shape) for shape in self.group_shapes)

        def stack(separable_cells: bool) -> nn.Sequential:
            return nn.Sequential(*(Cell(channels, separable_cells, batchnorm, se) for _ in range(cells)))

        # bottom-up: a stem, then per scale a stride-2 convolution and one stack of cells per group
        self.stem = nn.Conv2d(colors, channels, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 4, 2, 1) for _ in range(scales))
        self.encoder_cells = nn.ModuleList(stack(False) for _ in range(groups))
        # top-down
        self.start = nn.Parameter(torch.zeros(1, channels, *top))
        # the Gaussians' heads, each a convolution of the ELU of what it reads (top_down applies it)
        self.priors = nn.ModuleList(nn.Conv2d(channels, 2 * latent_channels, 3, padding=1) for _ in range(groups - 1))
        self.posteriors = nn.ModuleList(nn.Conv2d(2 * channels, 2 * latent_channels, 3, padding=1) for _ in range(groups))
        self.register_load_state_dict_pre_hook(_heads_were_sequential)
        self.merge = nn.ModuleList(nn.Conv2d(channels + latent_channels, channels, 1) for _ in range(groups))
        self.decoder_cells = nn.ModuleList(stack(separable) for _ in range(groups))
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels, channels, 4, 2, 1) for _ in range(scales))  # up[s]: scale s -> s + 1
        self.output = nn.Sequential(
            stack(separable), nn.ELU(), nn.Conv2d(channels, self.likelihood.channels(colors), 3, padding=1)
        )
        add_spectral_state(self, torch.Generator().manual_seed(0))
        # oneDNN runs the generative cells' depthwise convolutions (and their backward) about
        # twice as fast on channels-last maps: 1.5x the training images/s of this model on a CPU
        self.to(memory_format=torch.channels_last)

    @property
    def groups(self) -> int:
        return len(self.group_shapes)

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature map for every group, in top-down order."""
        h = self.stem((2 * x - 1).contiguous(memory_format=torch.channels_last))
        features = []
        for scale in reversed(range(len(self.down))):  # finest scale first
            h = self.down[len(self.down) - 1 - scale](h)
            for g in reversed([g for g in range(self.groups) if self.group_scale[g] == scale]):
                h = self.encoder_cells[g](h)
                features.append(h)
        return features[::-1]

    def clamped(self, mean: torch.Tensor, logvar: torch.Tensor) -> Gaussian:
        """NVAE's soft clamp, c * tanh(. / c), of the mean and the log standard deviation: no
        Gaussian far out or extremely narrow early in training, where the KL would explode."""
        if not self.soft_clamp:
            return mean, logvar
        c = self.soft_clamp
        return c * torch.tanh(mean / c), 2 * c * torch.tanh(logvar / (2 * c))

    def prior(self, g: int, e: torch.Tensor) -> Gaussian:
        """p(z_g | z_<g) from ``e``, the ELU of the top-down state (which the posterior reads too)."""
        if g == 0:
            zeros = e.new_zeros(len(e), *self.group_shapes[0])
            return zeros, zeros
        return self.clamped(*self.priors[g - 1](e).chunk(2, 1))

    def posterior_shares(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each group's encoder share of its posterior's parameters. The posterior head is one
        convolution of ELU([h, f]) (state, encoder features), which is the sum of a convolution of
        ELU(h) and one of ELU(f); the second depends on x alone, so :meth:`log_weights` computes it
        once per image instead of once per importance sample (and the head's ELU of h is the
        prior's)."""
        shares = []
        for g, feature in enumerate(features):
            conv, _, on_features = self.posterior_head(g)
            shares.append(F.conv2d(F.elu(feature), on_features, conv.bias, padding=conv.padding))
        return shares

    def posterior_head(self, g: int) -> tuple[nn.Conv2d, torch.Tensor, torch.Tensor]:
        """Group ``g``'s posterior convolution and its kernel's halves over the state and the features."""
        conv = self.posteriors[g]
        on_state, on_features = conv.weight.chunk(2, 1)
        return conv, on_state, on_features

    def posterior(self, g: int, e: torch.Tensor, share: torch.Tensor, prior: Gaussian) -> Gaussian:
        """q(z_g | x, z_<g) from ``e`` (ELU of the state) and the group's :meth:`posterior_shares` entry."""
        conv, on_state, _ = self.posterior_head(g)
        mean, logvar = (F.conv2d(e, on_state, None, padding=conv.padding) + share).chunk(2, 1)
        if self.residual_posterior:
            mean, logvar = prior[0] + mean, prior[1] + logvar
        return self.clamped(mean, logvar)

    def top_down(
        self,
        n: int,
        shares: list[torch.Tensor] | None = None,
        latents: list[torch.Tensor | None] | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, Gaussian, Gaussian | None]]]:
        """Decoder output for ``n`` images, and per group (z, prior, posterior or None).

        Each group's z is ``latents[g]`` where given, else a draw from the posterior when the
        encoder's ``shares`` (:meth:`encoding`) are given, else from the prior; ``temperature``
        scales the draws' standard deviation (0: the means, deterministic).
        """
        h = self.start.expand(n, -1, -1, -1)
        record = []
        for g in range(self.groups):
            if g and self.group_scale[g] != self.group_scale[g - 1]:
                h = self.up[self.group_scale[g] - 1](h)
            e = F.elu(h)
            p = self.prior(g, e)
            q = None if shares is None else self.posterior(g, e, shares[g], p)
            z = None if latents is None else latents[g]
            if z is None:
                z = reparametrize(*(p if q is None else q), scale=temperature)
            record.append((z, p, q))
            h = self.decoder_cells[g](self.merge[g](torch.cat([h, z], 1)))
        h = self.up[-1](h)  # the finest latent scale is half the input's
        return self.output(h), record

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, record = self.top_down(len(x), self.encoding(x))
        kl = torch.stack([gaussian_kl(q, p) for _, p, q in record], dim=1)
        return self.likelihood.log_prob(x, out), kl

    def encoding(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        return self.posterior_shares(self.bottom_up(x))

    def log_weights(
        self, x: torch.Tensor, k: int, encoding: list[torch.Tensor] | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        shares = self.encoding(x) if encoding is None else encoding
        xs = x.repeat(k, 1, 1, 1)  # sample-major: row i * B + b is image b's i-th sample
        out, record = self.top_down(len(xs), [share.repeat(k, 1, 1, 1) for share in shares])
        log_w = self.likelihood.log_prob(xs, out)
        for z, p, q in record:
            log_w = log_w + gaussian_log_density(z, p) - gaussian_log_density(z, q)
        return log_w.view(k, len(x))

    def group_sizes(self) -> torch.Tensor:
        return torch.tensor([float(math.prod(shape)) for shape in self.group_shapes])

    def penalty(self) -> torch.Tensor:
        total = super().penalty()
        if self.spectral:
            total = total + self.spectral * spectral_penalty(self, self.power_iterations)
        if self.bn_penalty:
            total = total + self.bn_penalty * batchnorm_penalty(self)
        return total

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x | z) with every group drawn from its prior at ``temperature`` (NVAE's
        reduced-temperature sampling; 0 gives the prior means, a deterministic image)."""
        return self.likelihood.mean(self.top_down(n, temperature=temperature)[0])

    def split_latents(self, z: torch.Tensor) -> list[torch.Tensor]:
        sizes = [math.prod(shape) for shape in self.group_shapes]
        return [part.reshape(len(z), *shape) for part, shape in zip(z.split(sizes, 1), self.group_shapes)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top group's posterior, flattened: the whole posterior when there is one group."""
        e = F.elu(self.start).expand(len(x), -1, -1, -1)
        top_share = self.posterior_shares(self.bottom_up(x)[:1])[0]
        mean, logvar = self.posterior(0, e, top_share, self.prior(0, e))
        return mean.flatten(1), logvar.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output from the top group's ``z`` (flattened), lower groups at their prior means."""
        top = z.view(len(z), *self.group_shapes[0])
        return self.top_down(len(z), latents=[top] + [None] * (self.groups - 1), temperature=0.0)[0]

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Every group's posterior mean (each given the means above it), flattened into one vector."""
        _, record = self.top_down(len(x), self.encoding(x), temperature=0.0)
        return torch.cat([z.flatten(1) for z, _, _ in record], 1)

    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood.mean(self.top_down(len(z), latents=self.split_latents(z))[0])


def _heads_were_sequential(module: nn.Module, state: dict, prefix: str, *_) -> None:
    """Checkpoints written while each head was ``nn.Sequential(ELU, Conv2d)`` name its tensors
    ``priors.i.1.*``; they load as ``priors.i.*``."""
    for key in [k for k in state if k.startswith((f"{prefix}priors.", f"{prefix}posteriors."))]:
        head, index, *rest = key[len(prefix) :].split(".")
        if rest[:1] == ["1"] and len(rest) == 2:
            state[f"{prefix}{head}.{index}.{rest[1]}"] = state.pop(key)
