"""Masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle, ICML 2015).

An MLP whose weight masks make output i depend only on inputs before i in an ordering: each unit
gets a degree, a hidden unit of degree m sees inputs/units of degree <= m, an output of degree d
sees units of degree < d.

``num_masks`` > 1 is connectivity-agnostic training: every training step uses the next of
``num_masks`` fixed degree assignments; with ``order_agnostic`` each also gets its own random input
ordering. At evaluation the first ``eval_masks`` of them are ensembled as the mixture
p(x) = mean_m p_m(x), still an exact likelihood; samples and completions come from the same mixture.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genctl.models.autoregressive import AutoregressiveModel, from_sequence, raster_order, tiny_ops, to_sequence
from genctl.models.base import MODELS
from genctl.nn.functional import log_mean_exp
from genctl.nn.nets import ACTIVATIONS


@MODELS.register("made")
class MADE(AutoregressiveModel):
    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        hidden: list[int],
        activation: Literal["relu", "elu", "silu", "tanh"],
        num_masks: int,
        order_agnostic: bool,
        eval_masks: int,
        seed: int,
    ) -> None:
        super().__init__(data_shape, binary)
        if not 1 <= eval_masks <= num_masks:
            raise ValueError(f"eval_masks must be between 1 and num_masks={num_masks}, got {eval_masks}")
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        self.out = 1 if binary else self.levels
        sizes = [self.dims, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(hidden[-1], self.dims * self.out)
        self.act = ACTIVATIONS[activation]()
        self.eval_masks = eval_masks
        # degrees[m] = (input degrees [D] (a permutation of 1..D), one tensor per hidden layer)
        g = torch.Generator().manual_seed(seed)
        inputs, hiddens = [], [[] for _ in hidden]
        for m in range(num_masks):
            order = torch.randperm(self.dims, generator=g) if order_agnostic and m > 0 else torch.arange(self.dims)
            degree = torch.empty(self.dims, dtype=torch.long)
            degree[order] = torch.arange(1, self.dims + 1)
            inputs.append(degree)
            low = 1
            for layer, size in enumerate(hidden):
                d = torch.randint(low, self.dims, (size,), generator=g) if self.dims > 1 else torch.ones(size, dtype=torch.long)
                hiddens[layer].append(d)
                low = int(d.min())
        self.register_buffer("input_degrees", torch.stack(inputs))  # [M, D]
        for layer, ds in enumerate(hiddens):
            self.register_buffer(f"hidden_degrees_{layer}", torch.stack(ds))  # [M, size]
        self.register_buffer("next_mask", torch.zeros((), dtype=torch.long))  # advances each training step
        self._masks: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}  # derived from the degrees: never saved

    @property
    def num_masks(self) -> int:
        return self.input_degrees.shape[0]

    def masks(self, m: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Mask ``m`` of every hidden layer [out, in], and of the head per value [D, hidden]:
        built once per mask set and device (a training step cycles through them), not per step."""
        cached = self._masks.get(m)
        if cached is None or cached[1].device != self.input_degrees.device:
            with torch.inference_mode(False):  # built during evaluation, used again by training steps
                cached = self._masks[m] = self._build_masks(m)
        return cached

    def _build_masks(self, m: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        degrees = [self.input_degrees[m]] + [getattr(self, f"hidden_degrees_{i}")[m] for i in range(len(self.layers))]
        hidden = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degrees, degrees[1:])]
        return hidden, (self.input_degrees[m][:, None] > degrees[-1][None, :]).float()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._masks.clear()  # loaded degrees may differ from the ones the cache was built from
        super()._load_from_state_dict(*args, **kwargs)

    def logits(self, x: torch.Tensor, mask: int | None = None) -> torch.Tensor:
        """Conditionals under mask ``mask``; by default the next training mask, or mask 0 in eval."""
        if mask is None:
            mask = int(self.next_mask) if self.training else 0
            if self.training:
                self.next_mask.fill_((mask + 1) % self.num_masks)
        h = to_sequence(x)
        hidden, head = self.masks(mask)
        for layer, m in zip(self.layers, hidden):
            h = self.act(F.linear(h, layer.weight * m, layer.bias))
        weight = self.head.weight.view(self.dims, self.out, -1) * head[:, None, :]  # every value's outputs share its mask
        out = F.linear(h, weight.view(self.dims * self.out, -1), self.head.bias)
        if self.binary:
            return from_sequence(out, self.data_shape)
        return from_sequence(out.view(len(x), self.dims, self.out), self.data_shape)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or self.eval_masks == 1:
            return self.log_prob_from_logits(x, self.logits(x))
        per_mask = torch.stack([self.log_prob_from_logits(x, self.logits(x, m)) for m in range(self.eval_masks)])
        return log_mean_exp(per_mask, 0)

    def mask_order(self, m: int) -> torch.Tensor:
        """Flat [C, H, W] indices in the generation order of mask ``m``."""
        return raster_order(self.data_shape)[torch.argsort(self.input_degrees[m])]

    def order(self) -> torch.Tensor:
        return self.mask_order(0)

    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draws from the evaluation mixture's conditional given the first ``known`` values in raster
        order (``known=0``: a sample): p(rest | known) = sum_m P(m | known) p_m(rest | known), so each
        image draws a mask from its posterior P(m | known) ~ p_m(known), then completes under it.

        p_m(known) is a product of mask m's conditionals only when m generates the known values
        first; a mask whose ordering does not (order-agnostic masks, beyond mask 0) has no tractable
        marginal for them and is left out of the posterior.
        """
        prefix = raster_order(self.data_shape)[:known].sort().values
        masks = [m for m in range(self.eval_masks) if torch.equal(self.mask_order(m)[:known].cpu().sort().values, prefix)]
        prefix = prefix.to(self.device)
        log_marginal = torch.stack([self.likelihood.per_value(x, self.logits(x, m)).flatten(1)[:, prefix].sum(1) for m in masks])
        which = torch.multinomial(torch.softmax(log_marginal.t(), -1), 1).squeeze(1)
        x = x.clone()
        for i, m in enumerate(masks):
            rows = (which == i).nonzero().squeeze(1)
            if not len(rows):
                continue
            if fast:
                x[rows] = self.complete_incrementally(x[rows], known, temperature, m)
            else:
                x[rows] = self.complete_with(x[rows], known, temperature, self.mask_order(m), lambda v, m=m: self.logits(v, m))
        return x

    def complete_incrementally(self, x: torch.Tensor, known: int, temperature: float, m: int) -> torch.Tensor:
        """Mask ``m``'s values after its first ``known``, as :meth:`logits` would give them, but
        with the first layer's pre-activations updated by each new value's column (NADE's trick:
        O(hidden) per value for a one-layer MADE, instead of a full pass over all D inputs)."""
        hidden, head = self.masks(m)
        first, *deeper = [layer.weight * mask for layer, mask in zip(self.layers, hidden)]
        head_weight = self.head.weight.view(self.dims, self.out, -1) * head[:, None, :]
        head_bias = self.head.bias.view(self.dims, self.out)
        seq = torch.argsort(self.input_degrees[m])  # sequence positions in generation order
        v = to_sequence(x).clone()
        a = self.layers[0].bias + v[:, seq[:known]] @ first[:, seq[:known]].t()
        first_t = first.t().contiguous()  # row j: what value j adds to the pre-activations
        with tiny_ops(x.device):
            for j in seq[known:].tolist():
                h = self.act(a)
                for layer, weight in zip(self.layers[1:], deeper):
                    h = self.act(F.linear(h, weight, layer.bias))
                logits = F.linear(h, head_weight[j], head_bias[j])  # [B, 1 or 256]
                v[:, j] = self.draw(logits.squeeze(-1) if self.binary else logits, temperature)
                a = a + v[:, j : j + 1] * first_t[j]
        return from_sequence(v, self.data_shape)
