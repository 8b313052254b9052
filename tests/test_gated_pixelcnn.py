"""Gated PixelCNN: causality and receptive field by gradients, exact cropped sampling, labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genctl.models import build_model
from genctl.models.autoregressive import to_sequence
from genctl.models.gated_pixelcnn import GatedPixelCNN

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "gated_pixelcnn.yaml"
SHAPES = [((1, 5, 5), True), ((3, 4, 4), False)]  # binary, and 8-bit R -> G -> B


pytestmark = pytest.mark.usefixtures("one_thread")


def make(shape, binary, layers=2, kernel=3, num_classes=0) -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(shape, binary, channels=24, layers=layers, kernel=kernel, head=48, num_classes=num_classes)


def random_image(shape, binary) -> torch.Tensor:
    x = torch.rand(1, *shape)
    return torch.bernoulli(x) if binary else (x * 255).round() / 255


def dependencies(model: GatedPixelCNN, y: int | None = None) -> torch.Tensor:
    """[D, D] bool in raster order: output value i has a non-zero gradient w.r.t. input value j.

    The image is repeated D times so that one backward pass gives every row: batch item i
    backpropagates output value i only (8-bit: the sum of its 256 logits).
    """
    d = model.dims
    x = random_image(model.data_shape, model.binary).repeat(d, 1, 1, 1).requires_grad_()
    labels = None if y is None else torch.full((d,), y)
    out = model.logits(x, labels)
    if not model.binary:
        out = out.sum(1)
    to_sequence(out).diagonal().sum().backward()
    return to_sequence(x.grad) != 0


def earlier(d: int) -> torch.Tensor:
    """[D, D] bool: input j comes strictly before output i in raster order."""
    return torch.ones(d, d, dtype=torch.bool).tril(-1)


def raster_index(shape, c: int, h: int, w: int) -> int:
    return (h * shape[2] + w) * shape[0] + c


@pytest.mark.parametrize("shape, binary", SHAPES)
@pytest.mark.parametrize("layers, kernel, num_classes, y", [(2, 3, 0, None), (3, 5, 0, None), (2, 3, 4, 1), (2, 3, 4, None)])
def test_every_output_ignores_its_own_and_later_values(shape, binary, layers, kernel, num_classes, y):
    model = make(shape, binary, layers, kernel, num_classes)
    deps = dependencies(model, y)
    assert not (deps & ~earlier(model.dims)).any()


@pytest.mark.parametrize("shape, binary", SHAPES)
def test_no_blind_spot_every_earlier_value_is_seen(shape, binary):
    # four 3x3 layers reach 4 columns either side and 5 rows up: the whole of these images
    model = make(shape, binary, layers=4)
    deps = dependencies(model)
    assert torch.equal(deps, earlier(model.dims))
    c = shape[0] - 1
    at = raster_index(shape, c, 2, 1)
    for h, w in [(1, 2), (0, 3)]:  # the upper-right neighbours (h-1, w+1), (h-2, w+2)
        assert all(deps[at, raster_index(shape, k, h, w)] for k in range(shape[0]))


@pytest.mark.parametrize("shape, binary", [((1, 8, 8), True), ((3, 6, 6), False)])
def test_receptive_field_is_exactly_the_window(shape, binary):
    # two 3x3 layers reach k//2 = 1 further each (rows up, columns both ways), and the vertical
    # stack's shift one more row: a window of (3, 2, 2), smaller than the image, so it is tight
    model = make(shape, binary, layers=2)
    up, left, right = 3, 2, 2
    colors, height, width = shape
    expected = torch.zeros(model.dims, model.dims, dtype=torch.bool)
    for h in range(height):
        for w in range(width):
            for c in range(colors):
                i = raster_index(shape, c, h, w)
                for hh in range(max(0, h - up), h + 1):
                    for ww in range(max(0, w - left), min(width, w + right + 1)):
                        for cc in range(colors):
                            j = raster_index(shape, cc, hh, ww)
                            expected[i, j] = j < i
    assert torch.equal(dependencies(model), expected)


@pytest.mark.parametrize("shape, binary", SHAPES)
def test_labels_change_the_conditionals(shape, binary):
    model = make(shape, binary, num_classes=3)
    x = random_image(shape, binary).repeat(3, 1, 1, 1)
    with torch.no_grad():
        out = model.logits(x, torch.arange(3))
        plain = model.logits(x[:1])
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert not torch.allclose(out[0], plain[0])
    assert not (dependencies(model, y=2) & ~earlier(model.dims)).any()
    with pytest.raises(ValueError, match="num_classes=0"):
        make(shape, binary).logits(x, torch.arange(3))


def test_config_builds_and_scores_binarized_digits():
    cfg = OmegaConf.load(CONFIG)
    del cfg["defaults"]
    model = build_model(cfg, (1, 28, 28), True)
    assert isinstance(model, GatedPixelCNN)
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3))
    assert model.logits(x).shape == (2, 1, 28, 28)
    assert model.log_prob(x).shape == (2,)


def test_completion_and_sampling_pass_the_labels_to_every_step(monkeypatch):
    model = make((1, 4, 4), True, num_classes=3).eval()
    seen = []
    logits = model.logits

    def spy(x, y=None):
        seen.append(None if y is None else y.tolist())
        return logits(x, y)

    monkeypatch.setattr(model, "logits", spy)
    with torch.no_grad():
        model.complete(torch.zeros(2, 1, 4, 4), 8, fast=False, y=torch.tensor([2, 1]))
        assert seen == [[2, 1]] * 8
        seen.clear()
        model.sample(4, fast=False)  # no labels given: the classes in turn
        assert seen == [[0, 1, 2, 0]] * 16


@pytest.mark.parametrize("third", [0, 1])
@pytest.mark.parametrize("shape, binary", [((1, 7, 6), True), ((3, 5, 4), False)])
def test_incremental_completion_matches_full_passes_with_labels(shape, binary, third):
    """The fast sampler (vertical stack row by row, horizontal stack pixel by pixel) against one
    full pass per value: same seed, same images, for a completion and with class labels.
    float64, so that rounding between the two paths cannot tip a draw."""
    model = make(shape, binary, layers=3, num_classes=3).eval().double()
    with torch.no_grad():  # sharper conditionals than a fresh model's: a wrong one changes draws
        for p in model.parameters():
            p.mul_(3)
    torch.manual_seed(0)
    x = torch.rand(32, *shape, dtype=torch.float64)
    x = torch.bernoulli(x) if binary else (x * 255).round() / 255
    known = third * (model.dims // 3 + 1)  # from scratch, or from mid-row (mid-pixel for colour)
    y = torch.arange(32) % 3
    with torch.no_grad():
        torch.manual_seed(5)
        fast = model.complete(x, known, temperature=0.9, fast=True, y=y)
        torch.manual_seed(5)
        reference = model.complete(x, known, temperature=0.9, fast=False, y=y)
    assert torch.equal(fast, reference)
    assert not torch.equal(fast, x)


def test_checkpoints_from_before_the_last_layer_lost_its_residual_still_load():
    cfg = OmegaConf.create({"name": "gated_pixelcnn", "channels": 6, "layers": 3, "kernel": 3, "head": 6, "num_classes": 0})
    model = build_model(cfg, (1, 8, 8), True)
    state = model.state_dict()
    assert "layers.2.residual.weight" not in state and "layers.1.residual.weight" in state
    old = {**state, "layers.2.residual.weight": torch.zeros(6, 6, 1, 1), "layers.2.residual.bias": torch.zeros(6)}
    build_model(cfg, (1, 8, 8), True).load_state_dict(old)  # strict: the unused tensors are dropped, nothing else
    with pytest.raises(RuntimeError, match="layers.1.residual.weight"):
        build_model(cfg, (1, 8, 8), True).load_state_dict({k: v for k, v in state.items() if k != "layers.1.residual.weight"})
