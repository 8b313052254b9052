"""``genctl sample ckpt=PATH n=64``: prior samples, reconstructions or latent interpolations."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import hydra
import torch
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import build, config_dir, hydra_version_base
from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluating
from genctl.images import save_grid
from genctl.models.base import Completes, Reconstructs, Sampler, is_conditional
from genctl.runs.atomic import atomic_write, check_writable
from genctl.runs.checkpoint import open_checkpoint
from genctl.runtime import check_fits, check_seed

log = logging.getLogger("genctl")


@dataclass(frozen=True)
class SampleOptions:
    """``configs/sample.yaml``'s keys, checked (the YAML holds the values)."""

    n: int
    mode: Literal["prior", "reconstruct", "interpolate", "complete"]
    temperature: float
    fast: bool
    nrow: int
    seed: int
    label: int | None
    out: str | None
    save_tensor: bool

    def __post_init__(self) -> None:
        if self.n < 1 or self.nrow < 1:
            raise ValueError("n and nrow must be >= 1")
        if not 0 <= self.temperature < math.inf:  # NaN fails it too
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        check_seed(self.seed)


def interleave_rows(top: torch.Tensor, bottom: torch.Tensor, nrow: int) -> torch.Tensor:
    """Alternate rows of ``top`` and ``bottom`` so each original sits above its reconstruction."""
    rows = [t for pair in zip(top.split(nrow), bottom.split(nrow)) for t in pair]
    return torch.cat(rows)


@hydra.main(config_path=str(config_dir()), config_name="sample", **hydra_version_base())
@exit_on_user_error("sample")
def main(cfg: DictConfig) -> None:
    opts = build("sample", SampleOptions, {key: cfg[key] for key in SampleOptions.__dataclass_fields__})
    path, state, model, train_cfg = open_checkpoint(cfg)
    name = train_cfg.model.name
    if opts.mode in ("reconstruct", "interpolate") and not isinstance(model, Reconstructs):
        raise GenctlError(f"model '{name}' has no latent space; use mode=prior")
    if opts.mode == "complete" and not isinstance(model, Completes):
        raise GenctlError(f"model '{name}' is not autoregressive; mode=complete needs one")
    if opts.mode == "prior" and not isinstance(model, Sampler):
        raise GenctlError(f"model '{name}' has no prior to sample from; use mode=reconstruct or mode=interpolate")
    if opts.label is not None and not is_conditional(model):
        raise GenctlError(f"model '{name}' is not class-conditional; drop label=")
    # the checkpoint's folder (its samples/ included) or the one out= names: checked before the sampling's time is spent
    out = Path(opts.out) if opts.out else path.parent / "samples" / f"{opts.mode}.png"
    root = out.parent if opts.out else path.parent
    written = [out, out.with_suffix(".pt")] if opts.save_tensor else [out]
    for file in written:
        check_writable(file, "the samples", "pass out=PATH.png in a writable folder", root)
    with evaluating(model, opts.seed):
        if opts.mode == "prior":
            y = None if opts.label is None else torch.full((opts.n,), opts.label, device=model.device)
            images = model.sample(opts.n, opts.temperature, fast=opts.fast, y=y)
        else:
            data = load_dataset(train_cfg.dataset)
            test = data.fixed("test").to(model.device)
            if opts.mode == "reconstruct":
                x = test[: opts.n]
                images = interleave_rows(x, model.reconstruct(x), opts.nrow)
            elif opts.mode == "complete":  # keep the upper half of each test image, sample the rest
                x = test[: opts.n]
                y = data.labels["test"][: opts.n].to(model.device) if is_conditional(model) else None
                c, h, w = model.data_shape
                known = (h // 2) * w * c
                completed = model.complete(x, known, opts.temperature, opts.fast, y)
                images = interleave_rows(x, completed, opts.nrow)
            else:
                pairs = max(1, opts.n // opts.nrow)
                if 2 * pairs > len(test):
                    raise GenctlError(f"interpolate needs {2 * pairs} test images, the split has {len(test)}")
                image = 4 * math.prod(model.data_shape)
                check_fits(opts.nrow, pairs * image, "nrow", f"interpolation columns ({pairs} images each)")
                z = model.code(test[: 2 * pairs])
                t = torch.linspace(0, 1, opts.nrow, device=z.device)[None, :, None]
                path_z = (1 - t) * z[:pairs, None] + t * z[pairs:, None]
                images = model.render(path_z.flatten(0, 1))
    save_grid(images, out, opts.nrow, root)
    log.info("%d images (%s) from %s written to %s", len(images), opts.mode, path, out)
    if opts.save_tensor:
        tensor = images.cpu()
        atomic_write(written[1], lambda f: torch.save(tensor, f), "the image tensor", root)
        log.info("tensor written to %s", written[1])
