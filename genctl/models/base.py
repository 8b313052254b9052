"""The contract between models and the rest of genctl.

The training loop, evaluation and sampling only ever call what is declared here, so they never
need to know which model they hold.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from genctl.config import build
from genctl.errors import GenctlError
from genctl.registry import Registry


class GenerativeModel(nn.Module):
    """A model of images ``x`` of shape ``data_shape`` (values in [0, 1]; {0, 1} when ``binary``).

    Subclasses implement :meth:`metrics` and, where they define a distribution to draw from,
    :meth:`sample`. Losses (``genctl.losses``) state which further methods they need.
    """

    #: whether :meth:`sample` draws from a model distribution (an autoencoder has none)
    can_sample: bool = True
    #: whether :meth:`reconstruct` and latent interpolation make sense
    has_latents: bool = False
    #: whether the model is class-conditional: then training, evaluation and sampling pass labels
    conditional: bool = False

    def __init__(self, data_shape: tuple[int, int, int], binary: bool) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.binary = binary

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def metrics(self, x: torch.Tensor, k: int, chunk: int, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image evaluation numbers for a batch ``x``, one tensor [B] per metric.

        ``y`` holds class labels [B] for :attr:`conditional` models and is None otherwise.

        Likelihood metrics are named ``nll_<estimator>`` and are negative log-likelihoods in
        nats per image (``nll_exact``, ``nll_elbo``, ``nll_iwae`` with ``k`` importance samples
        evaluated ``chunk`` at a time).
        """
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images [n, C, H, W] in [0, 1] drawn from the model.

        ``fast=False`` asks for the plain reference sampler where a model has a faster one;
        both give the same images for the same seed. ``y``: class labels [n] for conditional
        models (by default the classes in turn).
        """
        raise GenctlError(f"{type(self).__name__} defines no distribution to sample from; use mode=reconstruct")


MODELS: Registry[GenerativeModel] = Registry("model", "genctl.models")


def build_model(cfg: DictConfig, data_shape: tuple[int, int, int], binary: bool) -> GenerativeModel:
    """Construct ``cfg.name`` from the registry with the remaining keys as its options."""
    name = str(cfg.name)
    cls = MODELS.get(name)
    options: dict[str, Any] = {k: v for k, v in cfg.items() if k != "name"}
    return build(f"model '{name}'", cls, options, data_shape=tuple(data_shape), binary=binary)
