"""Neural autoregressive distribution estimator (Larochelle & Murray, AISTATS 2011).

    h_i = act(c + W[:, <i] x_<i),    p(x_i = 1 | x_<i) = sigmoid(b_i + V_i . h_i)

The hidden weights W are shared across the D conditionals, so every h_i comes from one running
(exclusive) sum over i: O(HD) for the whole image instead of O(HD^2). 8-bit data gets 256 logits
per value (V is [D, 256, H]).

Sampling with ``fast=True`` keeps the running sum a = c + W[:, <i] x_<i and adds one value's
column per step: O(HD) per image, against one full O(HD) pass per value for the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from genctl.models.autoregressive import AutoregressiveModel, from_sequence, tiny_ops, to_sequence
from genctl.models.base import MODELS

CACHE_ELEMENTS = 2**21  # floats of [B, D, H] intermediates per chunk of images


@MODELS.register("nade")
class NADE(AutoregressiveModel):
    def __init__(
        self, data_shape: tuple[int, int, int], binary: bool, hidden: int, activation: Literal["sigmoid", "relu"]
    ) -> None:
        super().__init__(data_shape, binary)
        out = 1 if binary else self.levels
        self.W = nn.Parameter(torch.randn(self.dims, hidden) * 0.01)  # row j: what x_j adds to every later h
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(self.dims, out, hidden) * 0.01)
        self.b = nn.Parameter(torch.zeros(self.dims, out))
        self.activation = torch.sigmoid if activation == "sigmoid" else torch.relu

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        v = to_sequence(x)  # [B, D]
        # The [B, D, H] pre-activations make this memory-bound: a few images at a time keep them in
        # cache, 4x the training throughput of one batch-wide pass on a 2-core CPU (same result).
        images = max(1, CACHE_ELEMENTS // (self.dims * self.c.numel()))
        out = torch.cat([self.sequence_logits(part) for part in v.split(images)]) + self.b
        return from_sequence(out.squeeze(-1) if self.binary else out, self.data_shape)

    def sequence_logits(self, v: torch.Tensor) -> torch.Tensor:
        """[B, D] values -> [B, D, 1 or 256] logits, bias excluded."""
        contributions = v.unsqueeze(-1) * self.W  # [B, D, H]
        h = self.activation(self.c + torch.cumsum(contributions, dim=1) - contributions)  # exclusive: j < i
        if self.binary:  # one output per value: an elementwise product beats a batched matmul
            return (h * self.V[:, 0]).sum(-1, keepdim=True)
        return torch.einsum("bdh,doh->bdo", h, self.V)

    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not fast:  # unconditional: y is always None here
            return super().complete(x, known, temperature, fast=False)
        v = to_sequence(x).clone()
        a = self.c + v[:, :known] @ self.W[:known]
        with tiny_ops(x.device):
            for i in range(known, self.dims):
                logits = self.activation(a) @ self.V[i].t() + self.b[i]  # [B, 1 or 256]
                v[:, i] = self.draw(logits.squeeze(-1) if self.binary else logits, temperature)
                a = a + v[:, i : i + 1] * self.W[i]
        return from_sequence(v, self.data_shape)
