"""Image grids without torchvision: tile a batch and write it as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genctl.runs.atomic import atomic_write


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> [C, rows*(H+pad)+pad, nrow*(W+pad)+pad], white padding."""
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = -(-n // nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i, img in enumerate(images.detach().float().cpu().clamp(0, 1)):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    return grid


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, root: Path | None = None) -> Path:
    """Write the grid of ``images`` as a PNG at ``path`` through genctl's one writer
    (:func:`genctl.runs.atomic.atomic_write`): PIL's own ``save(path)`` would follow a link planted
    there, or at a folder between ``root`` (default: the file's folder) and it."""
    grid = make_grid(images, nrow)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    atomic_write(path, lambda f: image.save(f, format="PNG"), "the image grid", root)
    return path
