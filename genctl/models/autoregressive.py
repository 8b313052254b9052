"""Autoregressive image models: p(x) = prod_i p(x_i | x_<i), exact likelihood and sampling.

The D = C*H*W values of an image are ordered as in PixelCNN (van den Oord et al. 2016): rows
top to bottom, columns left to right, and R -> G -> B within a pixel, unless a model says
otherwise through :meth:`AutoregressiveModel.order`. Binarized data gets one Bernoulli logit per
value; 8-bit data a 256-way softmax per value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from genctl.models.base import Completes, ExactLikelihood, GenerativeModel, Sampler
from genctl.nn.likelihoods import Bernoulli, Categorical


@contextmanager
def tiny_ops(device: torch.device) -> Iterator[None]:
    """One CPU thread while sampling step by step: each op is microseconds of work, and handing
    it to a second thread costs more than it saves (64 PixelCNN digits: 3.5 s vs 100 s measured
    on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def raster_order(shape: tuple[int, int, int]) -> torch.Tensor:
    """Flat indices into a [C, H, W] tensor, sorted by (row, column, channel)."""
    c, h, w = shape
    return torch.arange(c * h * w).view(c, h * w).t().flatten()


def to_sequence(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, D] in raster order (pixel-major, channel-minor)."""
    return x.permute(0, 2, 3, 1).flatten(1)


def from_sequence(v: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`to_sequence`; a trailing logits dim [B, D, L] becomes [B, L, C, H, W]."""
    c, h, w = shape
    if v.dim() == 2:
        return v.view(-1, h, w, c).permute(0, 3, 1, 2)
    return v.view(v.shape[0], h, w, c, v.shape[-1]).permute(0, 4, 3, 1, 2)


class AutoregressiveModel(GenerativeModel, ExactLikelihood, Sampler, Completes):
    """Subclasses implement :meth:`logits`: for every value, the parameters of p(x_i | x_<i).

    ``logits(x)`` is [B, C, H, W] for binary data and [B, 256, C, H, W] for 8-bit data, and its
    entry i may depend only on the values before i in :meth:`order` (tests check this with
    gradients for every model).
    """

    def __init__(self, data_shape: tuple[int, int, int], binary: bool) -> None:
        super().__init__(data_shape, binary)
        self.levels = 2 if binary else 256
        self.likelihood = Bernoulli() if binary else Categorical()
        self.dims = data_shape[0] * data_shape[1] * data_shape[2]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def conv_logits(self, out: torch.Tensor) -> torch.Tensor:
        """A convolutional head's [B, C * (1 or 256), H, W] as :meth:`logits` returns it; the 256
        logits of channel c are the c-th block of channels (as the colour masks group them)."""
        if self.binary:
            return out
        b, _, h, w = out.shape
        return out.view(b, self.data_shape[0], self.levels, h, w).transpose(1, 2)

    def order(self) -> torch.Tensor:
        """Flat indices into [C, H, W] in the order values are generated."""
        return raster_order(self.data_shape)

    def log_prob_from_logits(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x) per image [B] in nats, the sum of the per-value log conditionals."""
        return self.likelihood.log_prob(x, logits)

    def conditioned(self, y: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`logits` with the labels ``y`` bound (plain :meth:`logits` when there are none)."""
        return self.logits if y is None else functools.partial(self.logits, y=y)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_prob_from_logits(x, self.conditioned(y)(x))

    def draw(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """One value per entry of ``logits`` ([N] binary, [N, 256] 8-bit), in [0, 1].

        ``temperature`` divides the logits; 0 takes the most likely value.
        """
        if self.binary:
            if temperature == 0:
                return (logits > 0).float()
            return torch.bernoulli(torch.sigmoid(logits / temperature))
        if temperature == 0:
            return logits.argmax(-1).float() / 255
        return torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(-1).float() / 255

    def draw_value(self, out: torch.Tensor, c: int, temperature: float) -> torch.Tensor:
        """Value ``c`` of one pixel, drawn from a convolutional head's output there,
        [B, C * (1 or 256)] (laid out as :meth:`conv_logits` reads it): what incremental samplers draw."""
        logits = out.view(len(out), self.data_shape[0], -1)[:, c]
        return self.draw(logits.squeeze(-1) if self.binary else logits, temperature)

    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reference: one forward pass over the whole image per value. Models with a faster
        algorithm (caches) override this and take it when ``fast``; tests check they give the
        same conditionals and images."""
        return self.complete_with(x, known, temperature, self.order(), self.conditioned(y))

    def complete_with(
        self,
        x: torch.Tensor,
        known: int,
        temperature: float,
        order: torch.Tensor,
        logits_fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Sample the values ``order[known:]`` of ``x`` one at a time, each from a full pass of
        ``logits_fn``."""
        x = x.clone()
        _, height, width = self.data_shape
        for i in order[known:].tolist():
            c, rest = divmod(i, height * width)
            h, w = divmod(rest, width)
            logits = logits_fn(x)
            x[:, c, h, w] = self.draw(logits[:, c, h, w] if self.binary else logits[:, :, c, h, w], temperature)
        return x

    def sample(self, n: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.complete(torch.zeros(n, *self.data_shape, device=self.device), 0, temperature, fast, y)
