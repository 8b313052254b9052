"""Observation models p(x | network output): the per-image log-likelihood in nats.

Binarized pixels get a Bernoulli; 8-bit images a 256-way categorical (autoregressive models) or a
discretized logistic mixture (latent-variable models); continuous intensities in [0, 1] a Gaussian
with fixed standard deviation, whose negative log-likelihood is MSE / (2 sigma^2) plus a constant,
which is what "MSE-equivalent" means here (the constant is kept, so the numbers are true densities).

Each declares ``discrete``: whether its log-likelihood is a log probability mass over the values
the data can take (Bernoulli, categorical, discretized logistic) or a log density (the Gaussian).
Bits per dimension are computed from that declaration (``genctl.eval.report``): a mass needs no
offset, a density on [0, 1] needs ln 256 per dimension to be set beside 8-bit masses.

``channels(c)`` is the number of network output channels per image channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Bernoulli:
    """Outputs are logits, one per pixel."""

    discrete = True

    def channels(self, c: int) -> int:
        return c

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x | logits) summed over pixels; logits may carry extra leading sample dims."""
        return self.per_value(x, logits).flatten(-3).sum(-1)

    def per_value(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x_i | logit_i) of every value, [*, C, H, W]."""
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Categorical:
    """Outputs are 256 logits per value, [B, 256, C, H, W]: an exact probability mass per value."""

    discrete = True

    def channels(self, c: int) -> int:
        return 256 * c

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.per_value(x, logits).flatten(1).sum(1)

    def per_value(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x_i | logits_i) of every value, [B, C, H, W].

        The softmax runs over a [values, 256] matrix: when the network's output is channels-last
        (as the convolutional models give it), that is a view with each value's 256 logits
        adjacent, and neither the softmax nor its gradient strides across the image.
        """
        target = (x * 255).round().long()
        rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        return -F.cross_entropy(rows, target.flatten(), reduction="none").view_as(target)


class Gaussian:
    """Outputs are means; ``sigma`` is fixed (a config knob, not learned). A density on the
    intensities as given (x / 255, not dequantized), so its bits/dim are not a bound on an 8-bit
    likelihood: ``note`` says so wherever the number is reported."""

    discrete = False
    note = "Gaussian density on [0,1] intensities (x/255, no dequantization); bits/dim adds ln 256 per dimension"

    def __init__(self, sigma: float) -> None:
        if sigma <= 0:
            raise ValueError(f"obs_sigma must be positive, got {sigma}")
        self.sigma = sigma

    def channels(self, c: int) -> int:
        return c

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        z = (x - mean) / self.sigma
        ll = -0.5 * z * z - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)
        return ll.flatten(-3).sum(-1)

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp(0.0, 1.0)


class DiscretizedLogisticMixture:
    """Per channel, a mixture of ``k`` logistics integrated over each of the 256 value bins
    (Salimans et al., "PixelCNN++", ICLR 2017, section 2.1; the edge bins take the tails), as in
    NVAE's 8-bit decoder. Channels are independent given the latents (no R -> G -> B coupling).

    Decoder outputs are [*, C * 3k, H, W]: per channel k mixture logits, k means, k log-scales,
    on the [-1, 1] scale.
    """

    discrete = True

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"mixtures must be >= 1, got {k}")
        self.k = k

    def channels(self, c: int) -> int:
        return 3 * self.k * c

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *lead, _, h, w = out.shape
        logits, means, log_scales = out.reshape(*lead, -1, 3, self.k, h, w).unbind(-4)
        return logits, means, log_scales.clamp(min=-7.0)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        logits, means, log_scales = self.split(out)  # each [*, C, k, H, W]
        v = (2 * x - 1).unsqueeze(-3)  # [B, C, 1, H, W] on the [-1, 1] scale
        inv = torch.exp(-log_scales)
        upper, lower = inv * (v - means + 1 / 255), inv * (v - means - 1 / 255)
        log_cdf_upper = F.logsigmoid(upper)  # log P(value <= bin top): the lowest bin's mass
        log_survival_lower = -F.softplus(lower)  # log P(value > bin bottom): the highest bin's
        # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log(1 - exp(b - a)) + log sigmoid(-b), stably
        log_mid = log_cdf_upper + torch.log1p(-torch.exp(lower - upper).clamp(max=1 - 1e-6)) - F.softplus(lower)
        log_bin = torch.where(v < -0.999, log_cdf_upper, torch.where(v > 0.999, log_survival_lower, log_mid))
        ll = torch.logsumexp(F.log_softmax(logits, dim=-3) + log_bin, dim=-3)  # [*, C, H, W]
        return ll.flatten(-3).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        logits, means, _ = self.split(out)
        return ((F.softmax(logits, dim=-3) * means).sum(-3).clamp(-1, 1) + 1) / 2


def likelihood_for(
    binary: bool, observation: str, mixtures: int, obs_sigma: float
) -> Bernoulli | DiscretizedLogisticMixture | Gaussian:
    """Bernoulli for binarized data; for 8-bit data the ``observation`` asked for: ``logistic``
    (a discretized logistic mixture of ``mixtures`` components: a mass, so bits/dim are proper) or
    ``gaussian`` (a density with standard deviation ``obs_sigma``)."""
    if binary:
        return Bernoulli()
    if observation == "logistic":
        return DiscretizedLogisticMixture(mixtures)
    if observation == "gaussian":
        return Gaussian(obs_sigma)
    raise ValueError(f"observation={observation} is not one of: logistic, gaussian")
