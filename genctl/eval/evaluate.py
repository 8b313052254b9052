"""Average a model's per-image estimates over a split, repeatably."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from genctl.data.loader import Batches
from genctl.eval.estimators import compiled_log_weights, estimates
from genctl.eval.fusion import fold_batchnorm
from genctl.models.base import GenerativeModel, LatentLikelihood
from genctl.runtime import SEED_STRIDE, check_fits, check_seed

# what genctl eval can measure: likelihood, sample quality (genctl.eval.quality), a linear probe of the codes (genctl.eval.latent)
METRICS = ("nll", "fid", "probe")
# Importance samples per image at most: the time of an IWAE evaluation grows linearly with k, and
# 100,000 is 20 times the k=5000 that IWAE evaluations use (Burda et al. 2016).
MAX_K = 100_000


@dataclass(frozen=True)
class EvalOptions:
    """``configs/eval/*.yaml``, checked: what is measured, how likelihoods are estimated, on which split."""

    k: int
    chunk: int
    batch_size: int
    split: Literal["test", "val", "train"]
    seed: int
    metrics: list[str]
    num_samples: int
    compile: bool
    probe_steps: int

    def __post_init__(self) -> None:
        for name in ("k", "chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k > MAX_K:
            raise ValueError(
                f"k={self.k} is above {MAX_K}: every image is scored with k importance samples, so the time grows "
                f"with k, and IWAE evaluations use k=5000 at most; use a k up to {MAX_K}"
            )
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"metrics={list(self.metrics)} is not valid: choose one or more of {', '.join(METRICS)}, e.g. [nll,probe]"
            )
        if self.probe_steps < 1:
            raise ValueError(f"probe_steps must be >= 1, got {self.probe_steps}")
        if self.num_samples < 4:  # precision/recall need more points than the 3 neighbours that set a radius
            raise ValueError(f"num_samples must be >= 4, got {self.num_samples}")
        check_seed(self.seed)


def check_memory(e: EvalOptions, model: GenerativeModel, prefix: str = "eval.") -> None:
    """Refuse in one line, before any work, a batch of the evaluation that cannot fit in memory.

    What a batch holds per image at least: the model's output for ``min(chunk, k)`` posterior
    draws (one float per parameter of its observation model, per value) and its ``k`` log weights
    (:func:`genctl.eval.estimators.iwae_log_likelihood`). ``prefix``: how the caller names the
    settings (``eval.`` on the command line, none for ``genctl.nll``'s arguments)."""
    latent = isinstance(model, LatentLikelihood)
    likelihood = getattr(model, "likelihood", None)
    outputs = likelihood.channels(1) if likelihood is not None else 1
    draws = min(e.chunk, e.k) if latent else 1
    per_image = 4 * (draws * math.prod(model.data_shape) * outputs + (e.k if latent else 0))
    items = f"images with {draws} model output(s) and {e.k} log weights each" if latent else "images and their model outputs"
    check_fits(e.batch_size, per_image, f"{prefix}batch_size", items, f"lower {prefix}chunk")


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
    shard: tuple[int, int] = (0, 1),
    compile: bool = False,
) -> dict[str, float]:
    """Mean of every estimate (:func:`genctl.eval.estimators.estimates`) over the images ``x``
    (with their ``labels`` for conditional models).

    Each batch draws its posterior samples from a stream of its own (``seed`` and the batch's
    index), so a batch's numbers do not depend on which process scores it: with ``shard=(rank,
    world)`` only every world-th batch from ``rank`` on is scored and its share of the mean is
    returned, and the shares of all ranks add up to the one-process mean (``genctl eval`` under
    torchrun). BatchNorm is folded into its convolutions first (:mod:`genctl.eval.fusion`);
    ``compile``: the importance-weight pass is compiled (:func:`compiled_log_weights`).
    """
    rank, world = shard
    sums: dict[str, torch.Tensor] = {}
    with evaluating(model, seed):
        scored = fold_batchnorm(model)
        log_weights = compiled_log_weights(scored) if compile and isinstance(scored, LatentLikelihood) else None
        batches = Batches(x, batch_size, labels=labels)
        shown = tqdm(batches, desc="eval", leave=False, disable=not progress, dynamic_ncols=True)
        for index, (batch, y) in enumerate(shown):
            if index % world != rank:
                continue
            torch.manual_seed(seed * SEED_STRIDE + index)  # batch i draws from its own stream
            y = None if y is None else y.to(model.device)
            for name, values in estimates(scored, batch.to(model.device), k, chunk, y, log_weights).items():
                sums[name] = sums.get(name, 0) + values.double().sum()
    return {name: float(total) / len(x) for name, total in sums.items()}
