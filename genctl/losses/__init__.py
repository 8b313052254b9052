"""Training objectives. A loss maps (model, batch, step) to a dict of scalars: ``loss`` is
minimized, the other entries are logged. Each names the model capability it needs."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from genctl.config import build
from genctl.errors import GenctlError
from genctl.models.base import MODELS, GenerativeModel
from genctl.registry import Registry


class Loss(Protocol):
    requires: type

    def __call__(self, model: Any, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``step=None`` means the final objective (no warm-up), used for validation; ``y`` are
        class labels for conditional models, None otherwise."""
        ...


LOSSES: Registry[type[Loss]] = Registry("loss", "genctl.losses")


def build_loss(cfg: DictConfig, model: GenerativeModel, model_name: str) -> Loss:
    name = str(cfg.name)
    cls = LOSSES.get(name)
    if not isinstance(model, cls.requires):
        fits = [m for m in MODELS.names() if issubclass(MODELS.get(m), cls.requires)]
        own = [n for n in LOSSES.names() if isinstance(model, LOSSES.get(n).requires)]
        raise GenctlError(
            f"loss '{name}' needs one of the models {', '.join(fits)}; model '{model_name}' trains with: {', '.join(own)}"
        )
    return build(f"loss '{name}'", cls, {k: v for k, v in cfg.items() if k != "name"})
