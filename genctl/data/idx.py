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


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: a 4-byte magic (0, 0, dtype, ndim), ndim big-endian sizes, then data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise GenctlError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise GenctlError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise GenctlError(f"{path} is truncated: its header announces {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    count = math.prod(shape)  # Python ints: a forged header cannot overflow the check below
    if len(data) - offset < count * dtype.itemsize:
        raise GenctlError(f"{path} is truncated: header says {shape}, file too short")
    return np.frombuffer(data, dtype, count, offset).reshape(shape)


def _find(raw_dirs: list[Path], stem: str) -> Path | None:
    for d in raw_dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def read_mnist_layout(root: Path, folder: str, dataset: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {"train": (images, labels), "test": (images, labels)}, images uint8 [N, 1, 28, 28].

    Accepts ``root`` as the folder holding ``<folder>/raw`` (torchvision's ``root``), the
    ``<folder>`` folder itself, or the ``raw`` folder.
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
        if images.ndim != 3 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise GenctlError(f"{img} and {lab} do not form an image/label pair")
        out[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return out
