"""MNIST-style IDX files (LeCun's format), plain or gzipped, as torchvision lays them out.

Layout: ``ROOT/<Folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` where
Folder is ``MNIST`` or ``FashionMNIST``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from genctl.errors import GenctlError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The format allows up to 255 dimensions; image files have 3 ([N, H, W]) and label files 1, and a
# header announcing more describes no dataset (torchvision's reader allows 1 to 3 as well).
MAX_NDIM = 3


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: a 4-byte magic (0, 0, dtype, ndim), ndim big-endian sizes, then exactly
    the data those sizes announce. A header that does not describe the file is refused in one line
    naming the file, before anything is built from it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise GenctlError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise GenctlError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    if not 1 <= ndim <= MAX_NDIM:
        raise GenctlError(
            f"{path} is not an IDX file of images or labels: its header announces {ndim} dimensions, not 1 to {MAX_NDIM}"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise GenctlError(f"{path} is truncated: its header announces {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    size = math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow the checks below
    if len(data) - offset < size:
        raise GenctlError(f"{path} is truncated: header says {shape}, file too short")
    if len(data) - offset > size:
        raise GenctlError(
            f"{path} is not a valid IDX file: its header says {shape}, but {len(data) - offset - size:,} bytes follow that data"
        )
    return np.frombuffer(data, dtype, math.prod(shape), offset).reshape(shape)


def _find(raw_dirs: list[Path], stem: str) -> Path | None:
    for d in raw_dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def read_mnist_layout(
    root: Path, folder: str, dataset: str, size: int | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {"train": (images, labels), "test": (images, labels)}, images uint8 [N, 1, H, W].

    Accepts ``root`` as the folder holding ``<folder>/raw`` (torchvision's ``root``), the
    ``<folder>`` folder itself, or the ``raw`` folder. ``size``: the images must be ``size`` x
    ``size`` (``dataset.image_size``): a file of MNIST flattened to [60000, 1, 784] has the layout's
    names and three dimensions, and would otherwise be trained on as 1x784 images.
    """
    raw_dirs = [root / folder / "raw", root / "raw", root]
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = _find(raw_dirs, f"{prefix}-images-idx3-ubyte")
        lab = _find(raw_dirs, f"{prefix}-labels-idx1-ubyte")
        if img is None or lab is None:
            tried = ", ".join(str(d / f"{prefix}-images-idx3-ubyte[.gz]") for d in raw_dirs)
            raise GenctlError(
                f"dataset '{dataset}' not found: looked for {tried}; set GENCTL_DATA=DIR or dataset.root=DIR "
                f"to the folder that holds {folder}/raw, "
                f"add dataset.download=true (needs torchvision), or use the embedded dataset=digits"
            )
        images, labels = read_idx(img), read_idx(lab)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise GenctlError(f"{img} and {lab} must hold unsigned bytes (IDX type 0x08), as MNIST-style files do")
        if images.ndim != 3 or labels.ndim != 1:
            shapes = f"{'x'.join(map(str, images.shape))} and {'x'.join(map(str, labels.shape))}"
            raise GenctlError(f"{img} and {lab} hold arrays of {shapes}, not images [N, H, W] and their labels [N]")
        if labels.shape[0] != images.shape[0] or not len(images):
            raise GenctlError(f"{img} holds {len(images)} images and {lab} {len(labels)} labels: they do not form a split")
        if size is not None and images.shape[1:] != (size, size):
            height, width = images.shape[1:]
            raise GenctlError(
                f"{img} holds {height}x{width} images; dataset '{dataset}' is {size}x{size} (dataset.image_size={size}): "
                f"use the original files, or set dataset.image_size for square images of another size"
            )
        out[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return out
