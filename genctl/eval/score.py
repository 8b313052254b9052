"""The one way genctl scores a model on a split: training's final test, ``genctl eval`` and
``genctl.nll`` all call :func:`score`, so the three give the same numbers, labelled the same way."""

from __future__ import annotations

import torch

from genctl import distributed
from genctl.eval.evaluate import EvalOptions, evaluate
from genctl.eval.latent import codes as encode
from genctl.eval.latent import latent_summary
from genctl.eval.report import label_estimates
from genctl.models.base import Encodes, GenerativeModel
from genctl.runs.record import Evaluation

Codes = tuple[torch.Tensor, torch.Tensor | None]  # posterior means [N, D] and log-variances (None: a deterministic code)


def score(
    model: GenerativeModel,
    x: torch.Tensor,
    e: EvalOptions,
    about: str,
    labels: torch.Tensor | None = None,
    codes: Codes | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> Evaluation:
    """Every likelihood estimate ``model`` supports on the images ``x`` (exact; or negative ELBO,
    IWAE-k and KL; an autoencoder's MSE and PSNR), each with its nats, bits/dim and estimator, and
    for a model with an encoder its active units and KL per latent unit, from the split's ``codes``
    where the caller has them (else they are encoded here). ``labels`` go to a class-conditional model.

    ``shard=(rank, world)``: each process scores its share of the batches and every process gets
    the whole split's means (``genctl eval`` under torchrun); the latent summary is rank 0's alone.
    ``about`` names the data and the checkpoint, as the record keeps it."""
    rank, world = shard
    means = evaluate(
        model,
        x,
        e.batch_size,
        e.k,
        e.chunk,
        e.seed,
        progress=progress and rank == 0,
        labels=labels,
        shard=shard,
        compile=e.compile,
    )
    if world > 1:
        with distributed.lost_peers_in_one_line():
            shares = distributed.gather(means)
        means = {name: sum(part[name] for part in shares) for name in means}
    metrics = label_estimates(means, model, e.k)
    if isinstance(model, Encodes) and rank == 0:
        metrics.update(latent_summary(*(codes or encode(model, x, e.batch_size, labels))))
    return Evaluation(metrics, about)
