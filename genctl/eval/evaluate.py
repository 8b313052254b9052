"""Average a model's per-image estimates over a split, repeatably."""

from __future__ import annotations

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

BATCH_SEED_STRIDE = 1_000_003  # batch i of an evaluation seeded with s draws from seed s * stride + i
METRICS = ("nll", "fid")  # what genctl eval can measure: likelihood, sample quality (genctl.eval.quality)


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

    def __post_init__(self) -> None:
        for name in ("k", "chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"metrics={list(self.metrics)} is not valid: choose one or more of {', '.join(METRICS)}, e.g. [nll,fid]"
            )
        if self.num_samples < 4:  # precision/recall need more points than the 3 neighbours that set a radius
            raise ValueError(f"num_samples must be >= 4, got {self.num_samples}")


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
            torch.manual_seed(seed * BATCH_SEED_STRIDE + index)
            y = None if y is None else y.to(model.device)
            for name, values in estimates(scored, batch.to(model.device), k, chunk, y, log_weights).items():
                sums[name] = sums.get(name, 0) + values.double().sum()
    return {name: float(total) / len(x) for name, total in sums.items()}
