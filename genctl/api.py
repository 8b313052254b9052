"""genctl from Python: the model of a run or an export, its data, and its NLL as ``genctl eval`` reports it.

::

    import genctl
    model = genctl.load("runs/vae/2026-01-01_12-00-00-123456-a1b2")  # or best.pt, or an export folder
    images = model.sample(16, temperature=0.8)
    data = genctl.dataset("runs/vae/2026-01-01_12-00-00-123456-a1b2")
    genctl.nll(model, data.fixed("test"), k=100)  # {"nll_iwae": {"nats": .., "bits_per_dim": .., "estimator": ..}, ..}
    mean, logvar = genctl.encode(model, data.fixed("test"))  # posterior q(z|x) of every image, [N, D] each

Everything goes through what the CLI uses: the checkpoint (or export) is opened by
:mod:`genctl.runs.checkpoint`, which rebuilds the model through genctl's registry of names and
never lets a file choose the code that runs; the estimates are :func:`genctl.eval.evaluate.evaluate`
described by :func:`genctl.eval.report.label_estimates`, with ``configs/eval/default.yaml``'s settings
unless given, so the numbers are ``genctl eval``'s for the same split and settings.

The model is genctl's own ``GenerativeModel``; what it can do is what it declares
(:mod:`genctl.models.base`): ``sample(n, temperature)``; for latent-variable models ``code(x)``
(the encoder's point in latent space), ``render(z)`` (the decoder) and ``reconstruct(x)``; for
autoregressive ones ``log_prob(x)`` and ``complete(x, known)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from genctl.config import build, config_dir
from genctl.data import DataSplits, load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import EvalOptions, check_memory
from genctl.eval.latent import check_encodes, codes
from genctl.eval.score import score
from genctl.models import inputs
from genctl.models.base import GenerativeModel, is_conditional
from genctl.runs.checkpoint import load_checkpoint, open_checkpoint
from genctl.runs.folder import BEST, resolve_checkpoint


def load(path: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """The model of a run folder (its best.pt, as ``genctl eval`` picks it), a checkpoint file or
    an export folder, with the weights evaluation uses (the moving average where the run kept
    one), in eval mode on ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``)."""
    _, _, model, _ = open_checkpoint(OmegaConf.create({"ckpt": str(path), "device": str(device), "data_root": None}))
    return model.eval()


def dataset(path: str | Path, data_root: str | Path | None = None) -> DataSplits:
    """The data a run (or checkpoint, or export) was trained on, split and binarized as it was:
    ``.fixed("test")`` is the test set ``genctl eval`` scores, ``.labels["test"]`` its classes.
    ``data_root``: read the files from there instead of the run's ``dataset.root``."""
    checkpoint = resolve_checkpoint(path, prefer=BEST)
    cfg = OmegaConf.create(load_checkpoint(checkpoint)["config"]).dataset
    if data_root is not None:
        cfg.root = str(data_root)
    return load_dataset(cfg)


def nll(
    model: GenerativeModel,
    x: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    *,
    k: int | None = None,
    chunk: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Mean test NLL of the images ``x`` as ``genctl eval`` files it in metrics.json: every estimate
    the model supports (exact; or negative ELBO, IWAE-k and KL; an autoencoder's MSE and PSNR),
    each likelihood with its nats, bits/dim and estimator; for a latent model, its active units and
    KL per latent unit (:mod:`genctl.eval.latent`). ``k``, ``chunk``, ``batch_size``,
    ``seed`` and ``compile`` default to ``configs/eval/default.yaml``'s; the same values on the same images give
    ``genctl eval``'s numbers exactly (the order of images and batches decides the random draws).
    ``labels``: the classes of ``x``, which a class-conditional model needs (others ignore them).

    ``x`` is checked first (:func:`genctl.models.inputs.images`): a tensor or numpy array [N, C, H, W]
    of the model's shape, floats in [0, 1] ({0, 1} for a binary model) or uint8 grey levels; data
    outside the model's support would give NaN or a meaningless number, and is one-line error instead."""
    model = _genctl_model(model)
    given = {"k": k, "chunk": chunk, "batch_size": batch_size, "seed": seed, "compile": compile}
    defaults = OmegaConf.load(config_dir() / "eval" / "default.yaml")
    options = {**defaults, **{name: value for name, value in given.items() if value is not None}}
    e = build("eval", EvalOptions, options)
    check_memory(e, model, prefix="")
    x = inputs.images(model, x)
    labels = _labels_for(model, x, labels)
    return score(model, x, e, f"{len(x)} images given to genctl.nll", labels).metrics


def encode(
    model: GenerativeModel,
    x: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    *,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every image's posterior q(z|x) as ``genctl encode`` writes it: (mean [N, D], log-variance
    [N, D]) on the CPU, the top group's for a hierarchical VAE; an autoencoder's code and None.
    ``batch_size`` defaults to ``configs/encode.yaml``'s; ``labels``: the classes of ``x``, which a
    class-conditional model needs. ``x`` is checked as :func:`nll` checks it, and a model without a
    latent space (autoregressive) is refused in one line."""
    model = _genctl_model(model)
    check_encodes(model, type(model).__name__, "its codes")
    given = OmegaConf.load(config_dir() / "encode.yaml").batch_size if batch_size is None else batch_size
    batch_size = inputs.count(model, given, "batch_size")
    x = inputs.images(model, x)
    return codes(model, x, batch_size, _labels_for(model, x, labels))


def _genctl_model(model: Any) -> GenerativeModel:
    """``model`` if it is one of genctl's, else a one-line refusal saying how to get one."""
    if not isinstance(model, GenerativeModel):
        raise GenctlError(f"model is a {type(model).__name__}; pass a genctl model, e.g. genctl.load(path)")
    return model


def _labels_for(model: GenerativeModel, x: torch.Tensor, labels: Any) -> torch.Tensor | None:
    """The checked labels of ``x`` for a class-conditional ``model`` (required there), else None."""
    if not is_conditional(model):
        return None
    if labels is None:
        raise GenctlError("this model is class-conditional: pass the images' labels (e.g. genctl.dataset(path).labels['test'])")
    return inputs.labels(model, labels, len(x))
