"""PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML
2016, sections 3.1-3.3): a 7x7 mask-A convolution, ``layers`` residual LSTM layers, and two 1x1
mask-B layers to the per-value logits (R -> G -> B for colour).

Each LSTM layer splits into an input-to-state part, one masked convolution over the whole map,
and a state-to-state part that only reads states of earlier positions, so it is the only part
run in a Python loop (over rows or diagonals, never over pixels):

- ``row_lstm`` (3.1): rows top to bottom; a pixel's state sees a 1x3 window of the row above,
  so its receptive field is a triangle.
- ``diagonal_bilstm`` (3.2): the map is skewed so that diagonals become columns, and two
  directions run column by column over it; together they see the whole context above.

Sampling with ``fast=True`` is incremental for both: see :meth:`PixelRNN.complete`.

Colour: hidden units are split into R, G, B groups, and the input-to-state convolution masks
every gate of a unit by that unit's group (mask B), so a unit of group g sees the current pixel's
groups <= g only. The cell and gate arithmetic is elementwise per unit, which keeps it that way.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genctl.models.autoregressive import AutoregressiveModel, tiny_ops
from genctl.models.base import MODELS
from genctl.nn.masked import MaskedConv2d, causal_mask, output_head, pointwise, pointwise_stack


class GateConv(MaskedConv2d):
    """Input-to-state: a mask-B 1 x k convolution to the 4 gate blocks (i, f, o, g) of h units.

    Every block is masked as if it alone were the output, so gate channel j of any block carries
    the colour group of hidden unit j.
    """

    def __init__(self, in_channels: int, hidden: int, k: int, colors: int) -> None:
        super().__init__(in_channels, 4 * hidden, (1, k), "B", colors)
        self.mask.copy_(causal_mask(hidden, in_channels, (1, k), "B", colors).repeat(4, 1, 1, 1))


def lstm_step(gates: torch.Tensor, c: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update (paper eq. 3) from pre-activations laid out as (i, f, o, g) along ``dim``
    ([B, 4h, ...] by default)."""
    i, f, o, g = gates.chunk(4, dim)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


class RowLSTM(nn.Module):
    """Rows top to bottom; row i's gates = 1x3 mask-B conv of its input + 1x3 conv of h_{i-1}.

    The row above lies entirely before row i, so the state-to-state conv needs no mask.
    """

    kernel = 3  # the paper's k

    def __init__(self, channels: int, hidden: int, colors: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(channels, hidden, self.kernel, colors)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, self.kernel, padding=self.kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.input_to_state(x)  # [B, 4h, H, W], all rows at once
        b, _, _, width = gates.shape
        h = c = gates.new_zeros(b, self.hidden, width)
        rows = []
        for row in gates.unbind(2):  # unbind, not indexing: its backward is one stack
            h, c = lstm_step(row + self.state_to_state(h), c)
            rows.append(h)
        return torch.stack(rows, 2)


def skew(x: torch.Tensor) -> torch.Tensor:
    """[N, H, W, F] -> [N, H, W + H - 1, F], row i shifted right by i (zeros elsewhere): padded
    with H zero columns, the rows read back W + H - 1 at a time each start one further right."""
    n, height, width, features = x.shape
    flat = F.pad(x, (0, 0, 0, height)).flatten(1, 2)  # [N, H * (W + H), F]
    return flat[:, : height * (width + height - 1)].view(n, height, width + height - 1, features)


def unskew(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew`: [N, H, W + H - 1, F] -> [N, H, W, F]."""
    n, height, columns, features = x.shape
    flat = F.pad(x.flatten(1, 2), (0, 0, 0, height))  # [N, H * (W + H), F]
    return flat.view(n, height, columns + 1, features)[:, :, : columns - height + 1]


class DiagonalLSTM(nn.Module):
    """The weights of one direction of the Diagonal BiLSTM, run left to right by
    :func:`sweep_diagonals`: the state at (i, j) reads (i, j - 1) and (i - 1, j), which after
    :func:`skew` are rows i and i - 1 of the previous column.

    The state-to-state conv has no bias, and the skewed gates are zero outside the image, so
    states there stay exactly zero and carry nothing across the image's left edge.
    """

    def __init__(self, channels: int, hidden: int, colors: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(channels, hidden, 1, colors)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 2, bias=False)


def sweep_diagonals(directions: list[DiagonalLSTM], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each direction's states over its own input map, [B, h, H, W] each, all directions in one
    loop over the skewed columns.

    The maps are kept features-last, and the loop's columns contiguous, so no op inside it reads
    across strides; the state-to-state convolution (2 taps down a column) is one batched matrix
    product per column for every direction at once: the rows above and the same rows side by
    side, times the two taps as one [2h, 4h] matrix.
    """
    hidden, n = directions[0].hidden, len(directions)
    # a 1x1 convolution of a channels-last map is channels-last: [B, H, W, 4h] as a view
    maps = [d.input_to_state(x.contiguous(memory_format=torch.channels_last)) for d, x in zip(directions, inputs)]
    gates = torch.stack([skew(m.permute(0, 2, 3, 1)) for m in maps], 3)  # [B, H, W + H - 1, n, 4h]
    gates = gates.permute(2, 3, 0, 1, 4).contiguous()  # [W + H - 1, n, B, H, 4h]
    taps = torch.stack([torch.cat(d.state_to_state.weight.unbind(2), 1).t() for d in directions])  # [n, 2h, 4h]
    _, _, b, height, _ = gates.shape
    h = c = gates.new_zeros(n, b, height, hidden)
    cols = []
    for column in gates.unbind(0):
        above = F.pad(h, (0, 0, 1, 0))[:, :, :-1]  # row i reads row i - 1 of the previous column (zeros on top)
        recurrent = torch.bmm(torch.cat([above, h], -1).view(n, b * height, 2 * hidden), taps)
        h, c = lstm_step(column + recurrent.view_as(column), c, dim=-1)
        cols.append(h)
    states = torch.stack(cols, 3).flatten(0, 1)  # [n * B, H, W + H - 1, h]
    return list(unskew(states).view(n, b, height, -1, hidden).permute(0, 1, 4, 2, 3).unbind(0))


class DiagonalBiLSTM(nn.Module):
    """Left-to-right plus right-to-left (the same LSTM on the flipped map, own weights).

    The right-to-left state at (i, j) has seen the rest of row i, so its output is shifted down
    one row before the sum (paper, section 3.2). Then (i, j) gets rows < i from column j rightwards
    from it and everything up and to the left from the forward direction: the whole context.
    """

    def __init__(self, channels: int, hidden: int, colors: int) -> None:
        super().__init__()
        self.forward_dir = DiagonalLSTM(channels, hidden, colors)
        self.backward_dir = DiagonalLSTM(channels, hidden, colors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward, backward = sweep_diagonals([self.forward_dir, self.backward_dir], [x, x.flip(3)])
        return forward + F.pad(backward.flip(3), (0, 0, 1, 0))[:, :, :-1]


class ResidualLSTM(nn.Module):
    """2h -> LSTM with h units -> 1x1 mask B back to 2h, plus the input (section 3.3)."""

    def __init__(self, variant: str, hidden: int, colors: int) -> None:
        super().__init__()
        lstm = RowLSTM if variant == "row_lstm" else DiagonalBiLSTM
        self.lstm = lstm(2 * hidden, hidden, colors)
        self.up = MaskedConv2d(hidden, 2 * hidden, 1, "B", colors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.lstm(x))


@MODELS.register("pixelrnn")
class PixelRNN(AutoregressiveModel):
    bf16_gains_on = ("cpu",)  # 1.72x (Row LSTM) the float32 images/s on an AVX512_BF16 CPU (genctl.train.precision)

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        binary: bool,
        variant: Literal["row_lstm", "diagonal_bilstm"],
        hidden: int,
        layers: int,
        head: int,
    ) -> None:
        super().__init__(data_shape, binary)
        colors = data_shape[0]
        if hidden % colors or head % colors:
            raise ValueError(f"hidden and head must be divisible by {colors} (colour groups)")
        out = colors * (1 if binary else self.levels)
        self.net = nn.Sequential(
            MaskedConv2d(colors, 2 * hidden, 7, "A", colors),
            *(ResidualLSTM(variant, hidden, colors) for _ in range(layers)),
            *output_head(2 * hidden, head, out, colors),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_logits(self.net(x))

    def complete(
        self, x: torch.Tensor, known: int, temperature: float = 1.0, fast: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``fast=True``: incremental generation, each value costing every layer at one pixel
        (the first convolution from the image, each LSTM's update at that pixel from cached
        states) plus, once per row, what the row above completes (:class:`RowState`,
        :class:`DiagonalState`). Same conditionals as the full passes."""
        if not fast:
            return super().complete(x, known, temperature, fast)
        x = x.clone()
        _, height, width = self.data_shape
        first, layers, head = self.net[0], list(self.net[1:-4]), self.net[-4:]
        inputs = [x.new_zeros(len(x), layer.up.out_channels, height, width) for layer in layers]
        states = [(RowState if isinstance(layer.lstm, RowLSTM) else DiagonalState)(layer.lstm, x) for layer in layers]
        with tiny_ops(x.device):
            for n, value in enumerate(self.order().tolist()):
                c, rest = divmod(value, height * width)
                i, j = divmod(rest, width)
                if c == 0 and j == 0 and i > 0:  # row i - 1 is complete: it becomes the row above
                    for state, cache in zip(states, inputs):
                        state.next_row(cache[:, :, i - 1])
                v = first.at(x, i, j)  # sees the values drawn so far, the current pixel's earlier channels too
                for layer, state, cache in zip(layers, states, inputs):
                    cache[:, :, i, j] = v
                    v = v + pointwise(layer.up, state.step(cache, i, j))
                if n >= known:
                    x[:, c, i, j] = self.draw_value(pointwise_stack(head, v), c, temperature)
        return x


class RowState:
    """A Row LSTM's states while an image is generated pixel by pixel: the row above's cells and
    its state-to-state convolution (once per row), and the row in progress."""

    def __init__(self, lstm: RowLSTM, like: torch.Tensor) -> None:
        self.lstm = lstm
        n, width = len(like), like.shape[-1]
        self.h, self.c, self.c_above = (like.new_zeros(n, lstm.hidden, width) for _ in range(3))
        self.recurrent = like.new_zeros(n, 4 * lstm.hidden, width)  # state_to_state of zeros, no bias: row 0

    def next_row(self, inputs_above: torch.Tensor) -> None:
        self.recurrent = self.lstm.state_to_state(self.h)
        self.c_above, self.h, self.c = self.c, torch.zeros_like(self.h), torch.zeros_like(self.c)

    def step(self, inputs: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The LSTM's output at (i, j), [B, h], from its input map filled up to (i, j)."""
        gates = self.lstm.input_to_state.at(inputs, i, j) + self.recurrent[:, :, j]
        h, c = lstm_step(gates, self.c_above[:, :, j])
        self.h[:, :, j], self.c[:, :, j] = h, c
        return h


class DiagonalState:
    """A Diagonal BiLSTM's states while an image is generated pixel by pixel. Unskewed, the
    left-to-right state at (i, j) reads (i - 1, j) and (i, j - 1), so it is computed at its pixel;
    the right-to-left state at (i, j) reads (i - 1, j) and (i, j + 1), and (i, j) uses the one a
    row up: that whole row is swept right to left once it is complete."""

    def __init__(self, lstm: DiagonalBiLSTM, like: torch.Tensor) -> None:
        self.lstm = lstm
        n, width, hidden = len(like), like.shape[-1], lstm.forward_dir.hidden
        self.h, self.c, self.h_above, self.backward_above = (like.new_zeros(n, hidden, width) for _ in range(4))

    def next_row(self, inputs_above: torch.Tensor) -> None:
        """The row above, [B, channels, W], is complete: sweep the right-to-left LSTM over it."""
        direction = self.lstm.backward_dir
        upper, same = direction.state_to_state.weight.unbind(2)  # taps on the row above and on this row
        gates = direction.input_to_state(inputs_above[:, :, None])[:, :, 0]  # a 1x1 convolution: any row
        h = c = torch.zeros_like(self.h[:, :, 0])
        swept = torch.zeros_like(self.h)
        for j in reversed(range(swept.shape[-1])):
            h, c = lstm_step(gates[:, :, j] + self.backward_above[:, :, j] @ upper.t() + h @ same.t(), c)
            swept[:, :, j] = h
        self.backward_above = swept
        self.h_above, self.h, self.c = self.h, torch.zeros_like(self.h), torch.zeros_like(self.c)

    def step(self, inputs: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The BiLSTM's output at (i, j), [B, h]: this pixel's left-to-right state plus the
        right-to-left state one row up."""
        direction = self.lstm.forward_dir
        upper, same = direction.state_to_state.weight.unbind(2)
        zero = torch.zeros_like(self.c[:, :, 0])
        left_h, left_c = (self.h[:, :, j - 1], self.c[:, :, j - 1]) if j else (zero, zero)
        gates = pointwise(direction.input_to_state, inputs[:, :, i, j]) + self.h_above[:, :, j] @ upper.t() + left_h @ same.t()
        h, c = lstm_step(gates, left_c)
        self.h[:, :, j], self.c[:, :, j] = h, c
        return h + self.backward_above[:, :, j]
