"""Numbers the way papers report them: nats per image, bits per dimension, and the estimator.

bits/dim = nats / (D ln 2) for a discrete likelihood (a probability mass over the values the data
can take: Bernoulli, 256-way categorical, discretized logistic), so a uniform 8-bit model scores
exactly 8. A continuous density on [0, 1]^D is put on the same footing by the ln 256 per
dimension that 8-bit bins of width 1/256 add; such a number carries a note saying so. Which case
applies is what the model's observation model declares (``likelihood.discrete``), never a
guess from the dataset.

A class-conditional model's numbers are of log p(x | y), each image scored with its own label:
lower than log p(x) by up to ln(number of classes), so not comparable with an unconditional
model's. Its estimator says "conditional on the class label", wherever the number goes.
"""

from __future__ import annotations

import math
from typing import Any

from genctl.models.base import Likelihood, is_conditional
from genctl.runs.record import NLL_ELBO, NLL_EXACT, NLL_IWAE

ESTIMATORS = {
    NLL_EXACT: lambda k: "exact",
    NLL_ELBO: lambda k: "negative ELBO (1 posterior sample, analytic KL)",
    NLL_IWAE: lambda k: f"IWAE bound, k={k}",
}
CONDITIONAL = ", conditional on the class label"  # appended to the estimator of -log p(x | y)


def bits_per_dim(nats: float, dims: int, discrete: bool) -> float:
    """Bits per dimension of a per-image NLL in nats over ``dims`` values."""
    offset = 0.0 if discrete else dims * math.log(256)
    return (nats + offset) / (dims * math.log(2))


def label_estimates(means: dict[str, float], model: Likelihood, k: int) -> dict[str, Any]:
    """Give every ``nll_*`` mean its bits/dim and estimator (``k``: the IWAE sample count); keep
    the other numbers (``kl``, ``mse``) as they are."""
    dims = math.prod(model.data_shape)
    given = CONDITIONAL if is_conditional(model) else ""
    out: dict[str, Any] = {}
    for name, value in means.items():
        if name not in ESTIMATORS:
            out[name] = value
            continue
        discrete = model.likelihood.discrete
        out[name] = {"nats": value, "bits_per_dim": bits_per_dim(value, dims, discrete), "estimator": ESTIMATORS[name](k) + given}
        if not discrete:
            out[name]["note"] = model.likelihood.note
    return out


def metrics_line(described: dict[str, Any]) -> str:
    """One line: ``nll_iwae 95.31 nats (0.1754 bits/dim, IWAE bound, k=100); kl 25.1000; active_units 12``
    (lists, such as the KL of each latent unit, are left to metrics.json)."""
    parts = []
    for name, value in described.items():
        if isinstance(value, dict):
            parts.append(f"{name} {value['nats']:.2f} nats ({value['bits_per_dim']:.4f} bits/dim, {value['estimator']})")
        elif isinstance(value, int):
            parts.append(f"{name} {value}")
        elif not isinstance(value, list):
            parts.append(f"{name} {value:.4f}")
    return "; ".join(parts)
