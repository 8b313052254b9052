"""What a caller hands a model from Python (``genctl.nll``, ``model.sample``), checked in one place.

A model computes on whatever tensor it is given: images scaled to 0..255 for a binary model give
a NaN likelihood, a single image [C, H, W] is read as C images of one row, a float64 batch fails
deep inside a layer. Each entry point checks its arguments here first, so every mistake is one
:class:`~genctl.errors.GenctlError` naming the argument and what it should be, for the cost of
one pass over the data (its min and max, or whether every value is 0 or 1).

What is accepted: images as a torch tensor or a numpy array [N, C, H, W] matching the model's
``data_shape``, floats in [0, 1] ({0, 1} for a binary model) or uint8 grey levels 0..255 (as
genctl's datasets store them; 0 and 255 only for a binary model); labels as integers [N].
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from genctl.errors import GenctlError
from genctl.runtime import check_fits


class Checked(Protocol):
    """What the checks read of a model (every :class:`genctl.models.base.GenerativeModel` has it)."""

    data_shape: tuple[int, ...]
    binary: bool

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters: the first one's dtype is what floats are converted to."""


def images(model: Checked, x: Any, what: str = "x") -> torch.Tensor:
    """``x`` as a tensor of images ``model`` can score: a numpy array becomes a tensor, floats take
    the model's dtype; anything else than [N, C, H, W] images in the model's range is refused."""
    x = _tensor(x, what, "images [N, C, H, W]")
    if x.dim() == 3 and tuple(x.shape) == model.data_shape:
        raise GenctlError(f"{what} is one image of shape {list(x.shape)}; pass a batch of images [N, C, H, W], e.g. {what}[None]")
    if x.dim() != 4 or tuple(x.shape[1:]) != model.data_shape:
        raise GenctlError(
            f"{what} has shape {list(x.shape)}; this model takes images [N, {', '.join(map(str, model.data_shape))}]"
        )
    if len(x) == 0:
        raise GenctlError(f"{what} holds no images; pass at least one")
    if x.dtype == torch.uint8:  # grey levels, as genctl's datasets hold them: scored divided by 255
        if model.binary and ((x != 0) & (x != 255)).any():
            raise GenctlError(
                f"{what} holds uint8 levels other than 0 and 255, outside this binary model's support: "
                "pass binarized images, e.g. (x > 127).float()"
            )
        return x
    if not x.dtype.is_floating_point:
        raise GenctlError(f"{what} has dtype {x.dtype}; pass floats in [0, 1] or uint8 grey levels 0..255")
    if model.binary:
        if ((x != 0) & (x != 1)).any():
            raise GenctlError(
                f"{what} holds values other than 0 and 1 (or NaN), outside this binary model's support: "
                f"pass binarized images, e.g. torch.bernoulli(x) for intensities in [0, 1]"
            )
    else:
        lo, hi = torch.aminmax(x)
        if not (lo >= 0 and hi <= 1):  # NaN fails both
            raise GenctlError(
                f"{what} holds values in [{lo.item():g}, {hi.item():g}], outside the [0, 1] this model takes "
                f"(8-bit grey levels as value / 255): divide 0..255 levels by 255"
            )
    dtype = next(model.parameters()).dtype
    return x if x.dtype == dtype else x.to(dtype)


def labels(model: Checked, y: Any, n: int, what: str = "labels") -> torch.Tensor:
    """``y`` as the class labels [n] of a class-conditional ``model``: integers in [0, num_classes)."""
    classes = int(getattr(model, "num_classes", 0))
    y = _tensor(y, what, f"class labels [{n}]")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise GenctlError(f"{what} has dtype {y.dtype}; pass integer class labels (e.g. {what}.long())")
    if tuple(y.shape) != (n,):
        raise GenctlError(f"{what} has shape {list(y.shape)}; pass one class label per image, shape [{n}]")
    lo, hi = torch.aminmax(y)
    if lo < 0 or hi >= classes:
        raise GenctlError(f"{what} holds classes {lo.item()}..{hi.item()}; this model has classes 0..{classes - 1}")
    return y.long()


def count(model: Checked, n: Any, what: str = "n") -> int:
    """``n`` as a number of images to draw: a positive int whose images fit in memory."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise GenctlError(f"{what}={n!r} is not a whole number of images; pass an int >= 1")
    n = int(n)
    if n < 1:
        raise GenctlError(f"{what}={n} is not a number of images to draw; pass an int >= 1")
    check_fits(n, 4 * math.prod(model.data_shape), what, "images")
    return n


def temperature(t: Any, what: str = "temperature") -> float:
    """``t`` as a sampling temperature: a finite number >= 0 (0: the most likely values)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
        raise GenctlError(
            f"{what}={t!r} is not valid; pass a number >= 0 (1: the model's distribution, 0: its most likely values)"
        )
    return float(t)


def _tensor(x: Any, what: str, expected: str) -> torch.Tensor:
    """``x`` as a tensor (a numpy array's data, shared), or a one-line refusal naming what it is."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise GenctlError(f"{what} is a numpy array of {x.dtype}; pass {expected} as numbers")
        return torch.from_numpy(np.ascontiguousarray(x))  # no copy unless its strides need one
    if isinstance(x, (str, os.PathLike)):
        raise GenctlError(
            f"{what} is a path ({os.fspath(x)!r}), not a tensor; pass {expected}, e.g. genctl.dataset(path).fixed('test')"
        )
    if isinstance(x, (list, tuple)):
        raise GenctlError(f"{what} is a Python {type(x).__name__}; pass {expected} as a tensor (torch.stack or torch.tensor)")
    raise GenctlError(f"{what} is a {type(x).__name__}; pass {expected} as a torch tensor")
