"""Device choice and seeding, shared by every subcommand."""

from __future__ import annotations

import random

import numpy as np
import torch

from genctl.errors import GenctlError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenctlError(f"device={name} was asked for but no CUDA device is available; use device=cpu or auto")
    if not (name == "cpu" or name.startswith("cuda")):
        raise GenctlError(f"device={name} is not one of: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
