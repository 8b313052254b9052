"""What ``genctl sample ckpt=PATH n=64`` draws: prior samples, reconstructions, latent interpolations
and traversals, completions, or a map of the test codes by class (:mod:`genctl.eval.pictures`),
as a PNG grid in the checkpoint's ``samples/`` folder or where ``out=`` says."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig

from genctl.config import build
from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluating
from genctl.eval.latent import codes
from genctl.eval.pictures import check_mappable, save_map, traverse
from genctl.images import save_grid
from genctl.models.base import Completes, GenerativeModel, Reconstructs, Sampler, is_conditional
from genctl.runs.atomic import atomic_write, check_writable
from genctl.runs.checkpoint import open_checkpoint
from genctl.runs.folder import RunFolder
from genctl.runtime import check_fits, check_seed

log = logging.getLogger("genctl")

LATENT_MODES = ("reconstruct", "interpolate", "traverse", "map")  # what needs a latent space


@dataclass(frozen=True)
class SampleOptions:
    """``configs/sample.yaml``'s keys, checked (the YAML holds the values)."""

    n: int
    mode: Literal["prior", "reconstruct", "interpolate", "complete", "traverse", "map"]
    temperature: float
    fast: bool
    nrow: int
    seed: int
    label: int | None
    out: str | None
    save_tensor: bool
    span: float
    image: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.n < 1 or self.nrow < 1 or self.batch_size < 1:
            raise ValueError("n, nrow and batch_size must be >= 1")
        if not 0 <= self.temperature < math.inf:  # NaN fails it too
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if not 0 < self.span < math.inf:
            raise ValueError(f"span must be > 0 and finite (prior standard deviations), got {self.span}")
        if self.image < 0:
            raise ValueError(f"image must be >= 0 (a test image's index), got {self.image}")
        check_seed(self.seed)


def interleave_rows(top: torch.Tensor, bottom: torch.Tensor, nrow: int) -> torch.Tensor:
    """Alternate rows of ``top`` and ``bottom`` so each original sits above its reconstruction."""
    rows = [t for pair in zip(top.split(nrow), bottom.split(nrow)) for t in pair]
    return torch.cat(rows)


def partners(labels: torch.Tensor, pairs: int) -> torch.Tensor:
    """For each of the first ``pairs`` test images, the index of a later one of the same class,
    each used once: a conditional model draws a row with one label, so both ends of it must be
    of that class to be the two images' reconstructions."""
    used: set[int] = set()
    ends = []
    for start in range(pairs):
        same = (labels[pairs:] == labels[start]).nonzero().flatten().add(pairs).tolist()
        end = next((j for j in same if j not in used), None)
        if end is None:
            raise GenctlError(f"test image {start} has no later test image of its class {int(labels[start])} to interpolate to")
        used.add(end)
        ends.append(end)
    return torch.tensor(ends)


def grid_images(model: GenerativeModel, opts: SampleOptions, train_cfg: DictConfig) -> torch.Tensor:
    """The images of every mode but the map, in the order the grid shows them."""
    if opts.mode == "prior":
        y = None if opts.label is None else torch.full((opts.n,), opts.label, device=model.device)
        return model.sample(opts.n, opts.temperature, fast=opts.fast, y=y)
    data = load_dataset(train_cfg.dataset)
    test, labels = data.fixed("test").to(model.device), data.labels["test"].to(model.device)
    conditional = is_conditional(model)
    if opts.mode == "traverse":
        if opts.image >= len(test):
            raise GenctlError(f"image={opts.image} is past the test split's {len(test)} images; pick 0..{len(test) - 1}")
        rows = max(1, opts.n // opts.nrow)
        return traverse(model, test, labels, opts.image, rows, opts.nrow, opts.span, opts.batch_size)
    x = test[: opts.n]
    y = labels[: opts.n] if conditional else None
    if opts.mode == "reconstruct":
        return interleave_rows(x, model.reconstruct(x, y), opts.nrow)
    if opts.mode == "complete":  # keep the upper half of each test image, sample the rest
        c, h, w = model.data_shape
        completed = model.complete(x, (h // 2) * w * c, opts.temperature, opts.fast, y)
        return interleave_rows(x, completed, opts.nrow)
    pairs = max(1, opts.n // opts.nrow)
    if 2 * pairs > len(test):
        raise GenctlError(f"interpolate needs {2 * pairs} test images, the split has {len(test)}")
    image = 4 * math.prod(model.data_shape)
    check_fits(opts.nrow, pairs * image, "nrow", f"interpolation columns ({pairs} images each)")
    ends = partners(labels, pairs) if conditional else torch.arange(pairs, 2 * pairs)
    chosen = torch.cat([torch.arange(pairs), ends]).to(model.device)
    y = labels[chosen] if conditional else None
    z = model.code(test[chosen], y)
    t = torch.linspace(0, 1, opts.nrow, device=z.device)[None, :, None]
    path_z = (1 - t) * z[:pairs, None] + t * z[pairs:, None]
    row_y = None if y is None else y[:pairs].repeat_interleave(opts.nrow)
    return model.render(path_z.flatten(0, 1), row_y)


def latent_map(
    model: GenerativeModel, opts: SampleOptions, train_cfg: DictConfig, title: str, out: Path, root: Path
) -> torch.Tensor:
    """Write the map of the test split's codes by class at ``out``; the 2-D points drawn."""
    data = load_dataset(train_cfg.dataset)
    labels = check_mappable(data.labels["test"], data.name)
    means, _ = codes(model, data.fixed("test"), opts.batch_size, labels)
    return save_map(out, means, labels, title, root)


def sample_checkpoint(cfg: DictConfig) -> None:
    """``genctl sample``'s work on its composed config (``configs/sample.yaml``): draw ``cfg.mode``'s
    images from ``cfg.ckpt`` and write the grid (and the tensor, with ``save_tensor=true``)."""
    opts = build("sample", SampleOptions, {key: cfg[key] for key in SampleOptions.__dataclass_fields__})
    path, state, model, train_cfg = open_checkpoint(cfg)
    name = train_cfg.model.name
    if opts.mode in LATENT_MODES and not isinstance(model, Reconstructs):
        raise GenctlError(f"model '{name}' has no latent space; use mode=prior")
    if opts.mode == "complete" and not isinstance(model, Completes):
        raise GenctlError(f"model '{name}' is not autoregressive; mode=complete needs one")
    if opts.mode == "prior" and not isinstance(model, Sampler):
        raise GenctlError(f"model '{name}' has no prior to sample from; use mode=reconstruct or mode=interpolate")
    if opts.label is not None and not is_conditional(model):
        raise GenctlError(f"model '{name}' is not class-conditional; drop label=")
    # the checkpoint's folder (its samples/ included) or the one out= names: checked before the sampling's time is spent
    out = Path(opts.out) if opts.out else RunFolder(path.parent).samples / f"{opts.mode}.png"
    root = out.parent if opts.out else path.parent
    written = [out, out.with_suffix(".pt")] if opts.save_tensor else [out]
    for file in written:
        check_writable(file, "the samples", "pass out=PATH.png in a writable folder", root)
    with evaluating(model, opts.seed):
        if opts.mode == "map":
            result = latent_map(model, opts, train_cfg, f"test codes of {name}, {path.name}", out, root)
            log.info("latent map of %d test images from %s written to %s", len(result), path, out)
        else:
            result = grid_images(model, opts, train_cfg)
            save_grid(result, out, opts.nrow, root)
            log.info("%d images (%s) from %s written to %s", len(result), opts.mode, path, out)
    if opts.save_tensor:
        tensor = result.cpu()
        atomic_write(written[1], lambda f: torch.save(tensor, f), "the image tensor", root)
        log.info("tensor written to %s", written[1])
