"""``genctl sample ckpt=PATH n=64``: prior samples, reconstructions or latent interpolations."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.cli.eval import open_checkpoint
from genctl.config import config_dir
from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluating
from genctl.images import save_grid
from genctl.models.base import Completes, Reconstructs, Sampler, is_conditional

log = logging.getLogger("genctl")
MODES = ("prior", "reconstruct", "interpolate", "complete")


def interleave_rows(top: torch.Tensor, bottom: torch.Tensor, nrow: int) -> torch.Tensor:
    """Alternate rows of ``top`` and ``bottom`` so each original sits above its reconstruction."""
    rows = [t for pair in zip(top.split(nrow), bottom.split(nrow)) for t in pair]
    return torch.cat(rows)


@hydra.main(config_path=str(config_dir()), config_name="sample", version_base="1.3")
@exit_on_user_error("sample")
def main(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise GenctlError(f"mode={cfg.mode} is not one of: {', '.join(MODES)}")
    if cfg.n < 1 or cfg.nrow < 1:
        raise GenctlError("n and nrow must be >= 1")
    path, state, model, train_cfg = open_checkpoint(cfg)
    if cfg.mode in ("reconstruct", "interpolate") and not isinstance(model, Reconstructs):
        raise GenctlError(f"model '{train_cfg.model.name}' has no latent space; use mode=prior")
    if cfg.mode == "complete" and not isinstance(model, Completes):
        raise GenctlError(f"model '{train_cfg.model.name}' is not autoregressive; mode=complete needs one")
    if cfg.mode == "prior" and not isinstance(model, Sampler):
        raise GenctlError(f"model '{train_cfg.model.name}' has no prior to sample from; use mode=reconstruct or mode=interpolate")
    if cfg.label is not None and not is_conditional(model):
        raise GenctlError(f"model '{train_cfg.model.name}' is not class-conditional; drop label=")
    with evaluating(model, int(cfg.seed)):
        if cfg.mode == "prior":
            y = None if cfg.label is None else torch.full((int(cfg.n),), int(cfg.label), device=model.device)
            images = model.sample(int(cfg.n), float(cfg.temperature), fast=bool(cfg.fast), y=y)
        else:
            data = load_dataset(train_cfg.dataset)
            test = data.fixed("test").to(model.device)
            if cfg.mode == "reconstruct":
                x = test[: cfg.n]
                images = interleave_rows(x, model.reconstruct(x), int(cfg.nrow))
            elif cfg.mode == "complete":  # keep the upper half of each test image, sample the rest
                x = test[: cfg.n]
                y = data.labels["test"][: cfg.n].to(model.device) if is_conditional(model) else None
                c, h, w = model.data_shape
                known = (h // 2) * w * c
                completed = model.complete(x, known, float(cfg.temperature), bool(cfg.fast), y)
                images = interleave_rows(x, completed, int(cfg.nrow))
            else:
                pairs = max(1, int(cfg.n) // int(cfg.nrow))
                if 2 * pairs > len(test):
                    raise GenctlError(f"interpolate needs {2 * pairs} test images, the split has {len(test)}")
                z = model.code(test[: 2 * pairs])
                t = torch.linspace(0, 1, int(cfg.nrow), device=z.device)[None, :, None]
                path_z = (1 - t) * z[:pairs, None] + t * z[pairs:, None]
                images = model.render(path_z.flatten(0, 1))
    out = Path(cfg.out) if cfg.out else path.parent / "samples" / f"{cfg.mode}.png"
    save_grid(images, out, int(cfg.nrow))
    log.info("%d images (%s) from %s written to %s", len(images), cfg.mode, path, out)
    if cfg.save_tensor:
        torch.save(images.cpu(), out.with_suffix(".pt"))
        log.info("tensor written to %s", out.with_suffix(".pt"))
