"""The contract between models and the rest of genctl: read this file to add a model.

A model is a :class:`GenerativeModel` plus the capabilities it declares by inheriting them.
Training, evaluation and sampling only ever call what is declared here and test for a
capability with ``isinstance``, so they never need to know which model they hold:

- :class:`ExactLikelihood`: ``log_prob(x)``, exact log p(x) per image (autoregressive models).
- :class:`LatentLikelihood`: ``elbo_terms(x)`` and ``log_weights(x, k)``, the quantities the
  ELBO and the importance-weighted bound are made of (latent-variable models).
- :class:`Sampler`: ``sample(n)``, draws from the model's distribution.
- :class:`Reconstructs`: ``code(x)``, ``render(z)``, ``reconstruct(x)``: a latent space.
- :class:`Encodes`: ``encode(x)``, each image's posterior (mean, log-variance), or its code and
  None for a deterministic encoder: what ``genctl encode``, active units and the probe read.
- :class:`Completes`: ``complete(x, known)``, the rest of partly known images.
- :class:`ClassConditional`: labels ``y`` go with the images (``num_classes`` > 0).

A model computes quantities; ``genctl.eval`` turns them into estimates (exact / ELBO / IWAE-k,
chunking, bits/dim) and ``genctl.losses`` into training objectives. Abstract methods a model
leaves out make its construction fail with their names.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import nn

from genctl.config import build
from genctl.errors import GenctlError
from genctl.models import inputs
from genctl.registry import Registry


class ObservationModel(Protocol):
    """p(x | network output), ``genctl.nn.likelihoods``: what a likelihood is a distribution of."""

    #: a probability mass over the values the data can take (bits/dim need no offset), or a density
    discrete: bool

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor: ...


class GenerativeModel(nn.Module):
    """A model of images ``x`` of shape ``data_shape`` (values in [0, 1]; {0, 1} when ``binary``)."""

    #: device types ("cpu", "cuda") where bf16 autocast was measured to train this family faster
    #: than float32 on hardware with native bf16: ``trainer.precision=auto`` picks bf16 there only
    bf16_gains_on: tuple[str, ...] = ()

    def __init__(self, data_shape: tuple[int, int, int], binary: bool) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.binary = binary

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class Likelihood(ABC):
    """A density model: ``likelihood`` is its observation model, which says whether its numbers
    are probability masses or densities."""

    likelihood: ObservationModel


class ExactLikelihood(Likelihood):
    @abstractmethod
    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats per image [B] (``y``: class labels of conditional models)."""


class LatentLikelihood(Likelihood):
    """p(x) = integral of p(x | z) p(z) dz with an amortized posterior q(z | x)."""

    @abstractmethod
    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z) for one reparametrized z ~ q(z | x), [B]; KL(q || p) per latent group,
        [B, groups]) in nats: the ELBO is their difference, summed over groups. ``y``: class
        labels of conditional models, which condition every term (a bound on log p(x | y))."""

    @abstractmethod
    def log_weights(self, x: torch.Tensor, k: int, encoding: Any = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """[k, B] of log p(x, z_i) - log q(z_i | x) for k draws z_i ~ q(z | x). ``encoding`` is
        :meth:`encoding` of ``x`` when the caller draws several chunks of samples for one batch
        (the estimators do), so the encoder runs once; None: compute it. ``y`` as in :meth:`elbo_terms`."""

    def encoding(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """What the posterior's encoder computes from ``x`` (and ``y``) alone, for :meth:`log_weights`."""
        return None

    def group_sizes(self) -> torch.Tensor:
        """Latent units of each group of :meth:`elbo_terms`' KL (what KL balancing weighs by)."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | float:
        """A regularizer the training losses add (none by default)."""
        return 0.0


class Sampler(ABC):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every model's own ``sample`` checks its arguments first (:mod:`genctl.models.inputs`):
        ``n`` a positive int that fits in memory, ``temperature`` >= 0, ``y`` labels of the model's
        classes; a model only writes the drawing."""
        super().__init_subclass__(**kwargs)
        sample = cls.__dict__.get("sample")
        if callable(sample) and not getattr(sample, "__isabstractmethod__", False):
            cls.sample = _checked_sample(sample)

    @abstractmethod
    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images [n, C, H, W] in [0, 1] drawn from the model.

        ``fast=False`` asks for the plain reference algorithm where a model has a faster one;
        both give the same images for the same seed. ``y``: class labels [n] for conditional
        models (by default the classes in turn).
        """


def _checked_sample(sample: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``sample`` behind the checks of :meth:`Sampler.__init_subclass__`."""

    @functools.wraps(sample)
    def checked(self: Any, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        n = inputs.count(self, n)
        if is_conditional(self):
            y = torch.arange(n, device=self.device) % self.num_classes if y is None else inputs.labels(self, y, n, "y")
        return sample(self, n, inputs.temperature(temperature), fast, y)

    return checked


class Reconstructs(ABC):
    """A latent space; a class-conditional model's codes and images also depend on labels ``y``
    [B], which it needs in every method (the same code drawn as another class is another image)."""

    @abstractmethod
    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """A point in latent space per image [B, ...], for interpolation."""

    @abstractmethod
    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latent points (the inverse direction of :meth:`code`)."""

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.render(self.code(x, y), y)


class Encodes(ABC):
    """An amortized encoder whose per-image codes can be read out and measured (active units, a
    linear probe): the quantities :mod:`genctl.eval.latent` computes from it need nothing else."""

    @abstractmethod
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean [B, D], log-variance [B, D]) of q(z | x) (q(z | x, y) given a conditional model's
        labels), the top group's for a hierarchy; a deterministic encoder gives its code and None."""


class Completes(ABC):
    @abstractmethod
    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Keep the first ``known`` values of ``x`` (in generation order) and sample the rest."""


class ClassConditional:
    """Trained, evaluated and sampled with class labels when ``num_classes`` > 0."""

    num_classes: int


def is_conditional(model: Any) -> bool:
    """Whether labels travel with the images for ``model``."""
    return isinstance(model, ClassConditional) and model.num_classes > 0


MODELS: Registry[type[GenerativeModel]] = Registry("model", "genctl.models")


def build_model(cfg: DictConfig, data_shape: tuple[int, int, int], binary: bool) -> GenerativeModel:
    """Construct ``cfg.name`` from the registry with the remaining keys as its options."""
    name = str(cfg.name)
    cls = MODELS.get(name)
    options: dict[str, Any] = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return build(f"model '{name}'", cls, options, data_shape=tuple(data_shape), binary=binary)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise GenctlError(f"model '{name}' with these options does not fit in memory: make it smaller") from e
