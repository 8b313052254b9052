"""genctl: train, evaluate and sample deep generative models of images from the command line.

From Python, ``genctl.load``, ``genctl.dataset``, ``genctl.nll`` and ``genctl.encode`` (:mod:`genctl.api`) open a run
or an export; they are imported on first use, so ``import genctl`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from genctl.version import __version__

__all__ = ["__version__", "dataset", "encode", "load", "nll"]

if TYPE_CHECKING:
    from genctl.api import dataset, encode, load, nll


def __getattr__(name: str) -> Any:
    if name in ("dataset", "encode", "load", "nll"):
        return getattr(importlib.import_module("genctl.api"), name)
    raise AttributeError(f"module 'genctl' has no attribute '{name}'")
