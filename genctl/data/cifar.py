"""CIFAR-10 "python version" batches (``cifar-10-batches-py``), as torchvision downloads them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from genctl.errors import GenctlError

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]


# What a CIFAR-10 batch holds besides dicts, lists, strings and ints: one numpy array, pickled by
# numpy 1 (numpy.core) or 2 (numpy._core) with any pickle protocol, and bytes as Python 3 writes
# them at protocol 2 (_codecs.encode; torch's weights-only loader admits it too).
_ALLOWED = {
    ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the batch format and nothing else: a pickle can name any callable to run while
    it loads, so every global outside a numpy array's reconstruction is refused."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
        data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or not isinstance(labels, list):
            raise TypeError("expected a uint8 array 'data' and a list 'labels'")
        return data.reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise GenctlError(f"{path} is not a CIFAR-10 python batch, refused: {e}") from e


def read_cifar10(root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {"train": (images uint8 [50000, 3, 32, 32], labels), "test": ...}."""
    candidates = [root / "cifar-10-batches-py", root]
    base = next((d for d in candidates if (d / "test_batch").is_file()), None)
    if base is None:
        tried = ", ".join(str(d / "test_batch") for d in candidates)
        raise GenctlError(
            f"dataset 'cifar10' not found: looked for {tried}; set GENCTL_DATA=DIR or dataset.root=DIR to the folder "
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
