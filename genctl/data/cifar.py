"""CIFAR-10 "python version" batches (``cifar-10-batches-py``), as torchvision downloads them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from genctl.errors import GenctlError

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # These files are pickled dicts of numpy arrays written by the dataset's authors;
            # only open files you trust, as with any pickle.
            entry = pickle.load(f, encoding="latin1")
        data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        raise GenctlError(f"{path} is not a readable CIFAR-10 python batch: {e}") from e
    return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)


def read_cifar10(root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {"train": (images uint8 [50000, 3, 32, 32], labels), "test": ...}."""
    candidates = [root / "cifar-10-batches-py", root]
    base = next((d for d in candidates if (d / "test_batch").is_file()), None)
    if base is None:
        tried = ", ".join(str(d / "test_batch") for d in candidates)
        raise GenctlError(
            f"dataset 'cifar10' not found: looked for {tried}; set dataset.root=DIR to the folder "
            f"that holds cifar-10-batches-py (download it with torchvision or from its authors' page)"
        )
    out = {}
    for split, names in (("train", _TRAIN), ("test", _TEST)):
        parts = [_read_batch(base / n) for n in names]
        out[split] = (
            torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])),
        )
    return out
