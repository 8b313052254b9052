"""What ``genctl encode ckpt=RUN|EXPORT [split=test] [out=FILE]`` writes: a latent model's codes of a split, to study.

Writes ``mean`` and ``logvar`` [N, D] (each image's posterior q(z|x); the top group's for a
hierarchical VAE; an autoencoder has ``mean`` alone, its code) and ``label`` [N] as one safetensors
file, which numpy, torch or any safetensors reader opens without unpickling anything
(``safetensors.torch.load_file``). Its metadata says which checkpoint, split and model made it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig
from safetensors.torch import save

from genctl.config import build
from genctl.data import load_dataset
from genctl.eval.latent import check_encodes, codes
from genctl.runs.atomic import atomic_write, check_writable
from genctl.runs.checkpoint import open_checkpoint
from genctl.runs.folder import RunFolder

log = logging.getLogger("genctl")


@dataclass(frozen=True)
class EncodeOptions:
    """``configs/encode.yaml``'s keys besides the checkpoint's, checked."""

    split: Literal["test", "val", "train"]
    out: str | None
    batch_size: int

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def codes_file(means: torch.Tensor, logvars: torch.Tensor | None, labels: torch.Tensor, about: dict[str, str]) -> bytes:
    """The safetensors bytes of one split's codes: ``mean``, ``logvar`` (where the encoder has a
    variance) and ``label``, with ``about`` as the header's metadata."""
    tensors = {"mean": means.contiguous(), "label": labels.long().contiguous()}
    if logvars is not None:
        tensors["logvar"] = logvars.contiguous()
    return save(tensors, metadata=about)


def encode_checkpoint(cfg: DictConfig) -> None:
    """``genctl encode``'s work on its composed config (``configs/encode.yaml``)."""
    opts = build("encode", EncodeOptions, {key: cfg[key] for key in EncodeOptions.__dataclass_fields__})
    path, _, model, train_cfg = open_checkpoint(cfg)
    check_encodes(model, str(train_cfg.model.name), "its codes")
    out = Path(opts.out) if opts.out else RunFolder(path.parent).codes(opts.split)
    root = out.parent if opts.out else path.parent
    check_writable(out, "the codes", "pass out=FILE.safetensors in a writable folder", root)
    data = load_dataset(train_cfg.dataset)
    labels = data.labels[opts.split]
    means, logvars = codes(model, data.fixed(opts.split), opts.batch_size, labels)
    about = {"checkpoint": str(path), "split": opts.split, "model": str(train_cfg.model.name), "protocol": data.protocol}
    content = codes_file(means, logvars, labels, about)
    atomic_write(out, lambda f: f.write(content), "the codes", root)
    kind = "posterior means and log-variances" if logvars is not None else "codes"
    log.info("%d %s of %d units (%s split) from %s written to %s", len(means), kind, means.shape[1], opts.split, path, out)
