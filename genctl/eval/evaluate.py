"""Average a model's per-image metrics over a split, and label them the way papers report them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from genctl.data.loader import Batches
from genctl.models.base import GenerativeModel

ESTIMATORS = {
    "nll_exact": lambda k: "exact",
    "nll_elbo": lambda k: "negative ELBO (1 posterior sample, analytic KL)",
    "nll_iwae": lambda k: f"IWAE bound, k={k}",
}


@contextmanager
def evaluating(model: GenerativeModel, seed: int) -> Iterator[None]:
    """Eval mode, no autograd, and a private RNG seeded with ``seed``: evaluation is repeatable
    and leaves the training random streams exactly where they were."""
    was_training = model.training
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


def evaluate(
    model: GenerativeModel,
    x: torch.Tensor,
    batch_size: int,
    k: int,
    chunk: int,
    seed: int,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean of every metric of ``model.metrics`` over the images ``x`` (with their ``labels``
    for conditional models)."""
    sums: dict[str, torch.Tensor] = {}
    with evaluating(model, seed):
        batches = Batches(x, batch_size, labels=labels)
        for batch, y in tqdm(batches, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            y = None if y is None else y.to(model.device)
            for name, values in model.metrics(batch.to(model.device), k, chunk, y).items():
                sums[name] = sums.get(name, 0) + values.double().sum()
    return {name: float(total) / len(x) for name, total in sums.items()}


def label(means: dict[str, float], shape: tuple[int, ...], binary: bool, k: int) -> dict[str, Any]:
    """Attach bits/dim and the estimator to every ``nll_*`` number; keep the rest as they are.

    bits/dim = nats / (D ln 2). For continuous data the density is on [0, 1]^D; its bits/dim
    adds ln 256 per dimension, the offset to 8-bit bins of width 1/256.
    """
    dims = math.prod(shape)
    out: dict[str, Any] = {}
    for name, value in means.items():
        if name in ESTIMATORS:
            offset = 0.0 if binary else dims * math.log(256)
            out[name] = {
                "nats": value,
                "bits_per_dim": (value + offset) / (dims * math.log(2)),
                "estimator": ESTIMATORS[name](k),
            }
            if not binary:
                out[name]["note"] = "continuous density on [0,1]; bits/dim includes the ln 256/dim offset"
        else:
            out[name] = value
    return out
