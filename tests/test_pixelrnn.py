"""PixelRNN, both variants: causality by gradients, the Diagonal BiLSTM's full context, shapes
(incremental sampling is tested with every autoregressive model in test_autoregressive.py)."""

from __future__ import annotations

import pytest
import torch

from genctl.models.autoregressive import raster_order
from genctl.models.pixelrnn import PixelRNN

VARIANTS = ["row_lstm", "diagonal_bilstm"]
SHAPES = [((1, 5, 5), True), ((3, 4, 4), False)]


pytestmark = pytest.mark.usefixtures("one_thread")


def make(variant: str, shape: tuple[int, int, int], binary: bool) -> PixelRNN:
    # wide enough that no colour group of the head is all dead ReLUs at a pixel
    torch.manual_seed(0)
    return PixelRNN(shape, binary, variant=variant, hidden=12, layers=2, head=24)


def jacobian(model: PixelRNN, shape: tuple[int, int, int], outputs: list[int] | None = None) -> torch.Tensor:
    """[4, O, D] for 4 random images: [b, o, i] = d(output value o) / d(input value i), flat
    [C, H, W] indices, 256 logits summed. Images are independent, so one backward per o serves all.
    """
    torch.manual_seed(1)
    x = torch.rand(4, *shape, requires_grad=True)
    out = model.logits(x)
    out = (out if model.binary else out.sum(1)).flatten(1).sum(0)
    outputs = range(len(out)) if outputs is None else outputs
    return torch.stack([torch.autograd.grad(out[o], x, retain_graph=True)[0].flatten(1) for o in outputs], 1)


def rank(shape: tuple[int, int, int]) -> torch.Tensor:
    """Position in the generation order of every flat [C, H, W] index."""
    order = raster_order(shape)
    r = torch.empty_like(order)
    r[order] = torch.arange(len(order))
    return r


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,binary", SHAPES)
def test_outputs_depend_only_on_earlier_values(variant, shape, binary):
    model = make(variant, shape, binary)
    jac = jacobian(model, shape)
    r = rank(shape)
    future = r[None, :] >= r[:, None]  # [output, input]: input at or after the output
    assert (jac[:, future] == 0).all()
    assert (jac[:, ~future] != 0).any()


@pytest.mark.parametrize("shape,binary", [((1, 4, 12), True), ((3, 3, 10), False)])
def test_diagonal_bilstm_sees_the_whole_context(shape, binary):
    """Every value sees every value before it, at every pixel: the rows above on both sides come
    from the two directions (wider than the 7x7 first layer reaches, so neither covers alone).

    Except a row's last pixel: the mask-A first layer passes it on only to the row below's
    features, which no earlier pixel of that row can read (the paper's architecture as well), so
    it is seen from two rows down, or within the first layer's reach."""
    model = make("diagonal_bilstm", shape, binary)
    seen = (jacobian(model, shape) != 0).any(0)  # [output, input]: for some image
    r = rank(shape)
    colors, height, width = shape
    column = torch.arange(colors * height * width) % width
    row = torch.arange(colors * height * width) // width % height
    last = column[None, :] == width - 1
    reached = (row[:, None] >= row[None, :] + 2) | (column[:, None] >= width - 1 - 3)
    must_see = (r[None, :] < r[:, None]) & (~last | reached)
    assert seen[must_see].all()


def test_the_diagonal_bilstms_backward_direction_carries_the_upper_right_context():
    shape = (1, 4, 12)
    model = make("diagonal_bilstm", shape, True)
    with torch.no_grad():
        for layer in model.net[1:3]:
            layer.lstm.backward_dir.state_to_state.weight.zero_()
            layer.lstm.backward_dir.input_to_state.weight.zero_()
            layer.lstm.backward_dir.input_to_state.bias.zero_()
    seen = (jacobian(model, shape, [12]) != 0).any(0)[0]  # the first pixel of the second row
    assert not seen[10], "without its backward direction, (1, 0) no longer sees (0, 10)"


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_on_non_square_input(variant):
    binary = make(variant, (1, 4, 6), True)
    assert binary.logits(torch.rand(2, 1, 4, 6)).shape == (2, 1, 4, 6)
    color = make(variant, (3, 4, 6), False)
    assert color.logits(torch.rand(2, 3, 4, 6)).shape == (2, 256, 3, 4, 6)
    assert color.log_prob(torch.rand(2, 3, 4, 6)).shape == (2,)
