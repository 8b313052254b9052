"""The validation loss that picks best.pt: the training objective over a held-out split."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genctl import distributed
from genctl.data import Batches
from genctl.eval.evaluate import evaluating
from genctl.losses import Loss
from genctl.models import GenerativeModel


@dataclass(frozen=True)
class Validation:
    """The split that picks best.pt (empty: the train loss picks it), scored in batches with a fixed
    RNG, with ``model``: the trained one, or its moving average (``trainer.ema``)."""

    model: GenerativeModel
    x: torch.Tensor
    labels: torch.Tensor | None
    batch_size: int
    seed: int


def mean_loss(loss_fn: Loss, val: Validation, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """The final objective (no warm-up) averaged over ``val.x``. In data-parallel training each
    rank scores its share of the images and the sums are added up over ranks."""
    sums: dict[str, torch.Tensor] = {}
    model = val.model
    with evaluating(model, val.seed):
        for batch, y in Batches(val.x, val.batch_size, labels=val.labels, shard=shard):
            for name, value in loss_fn(model, batch, None, y).items():
                sums[name] = sums.get(name, 0) + value.double() * len(batch)
    totals = distributed.sum_tensors(list(sums.values()))
    return {name: float(total) / len(val.x) for name, total in zip(sums, totals)}
