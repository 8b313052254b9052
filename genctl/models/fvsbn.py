"""Fully-visible sigmoid belief network (Neal 1992; Frey 1998; the baseline in Larochelle &
Murray 2011): one logistic regression per value on all the values before it.

    p(x_i = 1 | x_<i) = sigmoid(b_i + sum_{j<i} W_ij x_j)

W is strictly lower triangular (in :meth:`order`), so a full image costs one D x D matrix
product. 8-bit data gets 256 logits per value: W becomes [D, 256, D].
"""

from __future__ import annotations

import torch
from torch import nn

from genctl.models.autoregressive import AutoregressiveModel, from_sequence, to_sequence
from genctl.models.base import MODELS


@MODELS.register("fvsbn")
class FVSBN(AutoregressiveModel):
    def __init__(self, data_shape: tuple[int, int, int], binary: bool) -> None:
        super().__init__(data_shape, binary)
        out = 1 if binary else self.levels
        self.weight = nn.Parameter(torch.zeros(self.dims * out, self.dims))
        self.bias = nn.Parameter(torch.zeros(self.dims * out))
        mask = torch.tril(torch.ones(self.dims, self.dims), diagonal=-1)
        self.register_buffer("mask", mask.repeat_interleave(out, dim=0), persistent=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(to_sequence(x), self.weight * self.mask, self.bias)
        if self.binary:
            return from_sequence(out, self.data_shape)
        return from_sequence(out.view(len(x), self.dims, self.levels), self.data_shape)
