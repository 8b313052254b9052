"""Every autoregressive model: causality by gradients, exact likelihood from its own conditionals,
sampling that follows them, and the fast (cropped) sampler equal to the full one."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf

from genctl.eval.estimators import estimates
from genctl.eval.evaluate import evaluate
from genctl.models import build_model
from genctl.models.autoregressive import AutoregressiveModel

# Small versions of every AR model: (name, options). Helpers' models join this table.
TINY_AR = {
    "fvsbn": {},
    "nade": {"hidden": 7, "activation": "sigmoid"},
    "made": {"hidden": [23, 19], "activation": "relu", "num_masks": 3, "order_agnostic": True, "eval_masks": 3, "seed": 0},
    "made_1mask": {
        "name": "made",
        "hidden": [30],
        "activation": "relu",
        "num_masks": 1,
        "order_agnostic": False,
        "eval_masks": 1,
        "seed": 0,
    },
    "pixelcnn": {"channels": 12, "blocks": 2, "first_kernel": 5, "kernel": 3, "head": 6},
    "pixelcnn_k5": {"name": "pixelcnn", "channels": 12, "blocks": 2, "first_kernel": 3, "kernel": 5, "head": 6},
    "gated_pixelcnn": {"channels": 6, "layers": 2, "kernel": 3, "head": 6, "num_classes": 0},
    "gated_pixelcnn_k5": {"name": "gated_pixelcnn", "channels": 6, "layers": 2, "kernel": 5, "head": 6, "num_classes": 0},
    "pixelrnn": {"variant": "row_lstm", "hidden": 6, "layers": 1, "head": 6},
    "pixelrnn_2layers": {"name": "pixelrnn", "variant": "row_lstm", "hidden": 6, "layers": 2, "head": 6},
    "pixelrnn_diagonal": {"name": "pixelrnn", "variant": "diagonal_bilstm", "hidden": 6, "layers": 1, "head": 6},
    "pixelrnn_diagonal_2layers": {"name": "pixelrnn", "variant": "diagonal_bilstm", "hidden": 6, "layers": 2, "head": 6},
}
SHAPES = [((1, 4, 4), True), ((3, 3, 3), False)]
pytestmark = pytest.mark.usefixtures("one_thread")


def make(key: str, shape, binary) -> AutoregressiveModel:
    options = {"name": key, **TINY_AR[key]}  # an entry's own "name" wins
    torch.manual_seed(0)
    return build_model(OmegaConf.create(options), shape, binary)


def conditionals(model):
    """(order, logits function) for each network the model trains: MADE has one per mask."""
    if hasattr(model, "mask_order"):
        return [(model.mask_order(m), lambda x, m=m: model.logits(x, m)) for m in range(model.num_masks)]
    return [(model.order(), model.logits)]


def value_logits(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """[B, D] per value (8-bit: the 256 logits of a value summed), flat over [C, H, W]."""
    return logits.flatten(1) if binary else logits.sum(1).flatten(1)


@pytest.mark.parametrize("shape, binary", SHAPES)
@pytest.mark.parametrize("key", TINY_AR)
def test_output_i_never_depends_on_inputs_at_or_after_i(key, shape, binary):
    model = make(key, shape, binary)
    dims = math.prod(shape)
    for order, logits_fn in conditionals(model):
        position = torch.empty(dims, dtype=torch.long)
        position[order] = torch.arange(dims)
        x = torch.rand(2, *shape, requires_grad=True)
        out = value_logits(logits_fn(x), binary)
        for i in range(dims):
            (grad,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
            seen = grad.abs().sum(0).flatten() > 0
            assert not seen[position >= position[i]].any(), f"{key}: value {i} sees its own or later inputs"


def log_prob_from_own_conditionals(model, x, order, logits_fn):
    """sum_i log p(x_i | x_<i), each conditional read with everything from i on replaced by noise."""
    total = torch.zeros(len(x), dtype=torch.float64)
    flat_x = x.flatten(1)
    for step, i in enumerate(order.tolist()):
        noisy = x.clone().flatten(1)
        later = order[step:]
        noisy[:, later] = (
            torch.rand(len(x), len(later)) if not model.binary else torch.bernoulli(torch.full((len(x), len(later)), 0.5))
        )
        logits = logits_fn(noisy.view_as(x))
        if model.binary:
            logit = logits.flatten(1)[:, i]
            total += torch.nn.functional.logsigmoid(torch.where(flat_x[:, i] > 0.5, logit, -logit)).double()
        else:
            lp = torch.log_softmax(logits.flatten(2)[:, :, i], dim=1)
            total += lp.gather(1, (flat_x[:, i] * 255).round().long()[:, None]).squeeze(1).double()
    return total


@pytest.mark.parametrize("shape, binary", SHAPES)
@pytest.mark.parametrize("key", TINY_AR)
def test_reported_nll_is_minus_the_sum_of_own_log_conditionals(key, shape, binary):
    model = make(key, shape, binary).eval()
    x = torch.bernoulli(torch.rand(3, *shape)) if binary else torch.randint(0, 256, (3, *shape)).float() / 255
    with torch.no_grad():
        reported = estimates(model, x, 1, 1)["nll_exact"].double()
        per_network = torch.stack([log_prob_from_own_conditionals(model, x, o, f) for o, f in conditionals(model)])
        used = per_network[: getattr(model, "eval_masks", 1)]
        expected = -(torch.logsumexp(used, 0) - math.log(len(used)))  # MADE's mask ensemble is a mixture
    torch.testing.assert_close(reported, expected, rtol=1e-5, atol=1e-4)


def test_tiny_fvsbn_is_normalized_and_its_samples_follow_its_conditionals():
    model = make("fvsbn", (1, 2, 2), True).eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn_like(model.weight) * 2)
        model.bias.copy_(torch.randn_like(model.bias))
        configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
        p = model.log_prob(configs).exp()
        torch.testing.assert_close(p.sum(), torch.tensor(1.0))
        torch.manual_seed(0)
        n = 40000
        samples = model.sample(n).view(n, 4)
    codes = (samples * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()
    freq = torch.bincount(codes, minlength=16).float() / n
    sigma = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * sigma + 1e-4).all(), (freq, p)


@pytest.mark.parametrize("shape, binary", SHAPES)
@pytest.mark.parametrize("key", [k for k in TINY_AR if "pixel" in k or k in ("nade", "made", "made_1mask")])
def test_fast_sampling_gives_the_reference_samplers_images(key, shape, binary):
    """Same seed, same conditionals and images: fast=True (caches or crops) against one full
    pass per value. The conditionals are compared, not only the draws: a fresh model's
    near-uniform probabilities seldom let a wrong conditional change a draw.

    float64, so that float32 rounding between the two paths cannot tip a 256-way draw.
    """
    model = make(key, shape, binary).eval().double()
    start = torch.zeros(4, *shape, dtype=torch.float64)
    draw, seen = model.draw, {True: [], False: []}
    images = {}
    with torch.no_grad():
        for fast in (True, False):
            model.draw = lambda logits, t, fast=fast: seen[fast].append(logits.clone()) or draw(logits, t)
            torch.manual_seed(3)
            images[fast] = model.complete(start, 0, fast=fast)
    assert len(seen[True]) == len(seen[False]) >= math.prod(shape)  # one draw per value (per mask group for MADE)
    for step, (a, b) in enumerate(zip(seen[True], seen[False])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=f"value {step}")
    assert torch.equal(images[True], images[False])


@pytest.mark.parametrize("fast", [True, False])
def test_completion_keeps_the_known_half(fast):
    model = make("pixelcnn", (1, 4, 4), True).eval()
    x = torch.bernoulli(torch.rand(5, 1, 4, 4))
    with torch.no_grad():
        out = model.complete(x, known=8, fast=fast)
    assert torch.equal(out[:, :, :2], x[:, :, :2])
    assert set(out.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("key", ["fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "pixelrnn"])
def test_fresh_default_models_score_real_digits_near_784_ln2(digits, key):
    """Nothing learnt yet: about 1/2 per binary pixel, 784 ln 2 = 543 nats (catches doubled
    activations, logits scored as probabilities and the like)."""
    from genctl.config import config_dir

    cfg = OmegaConf.load(config_dir() / "model" / f"{key}.yaml")
    del cfg["defaults"]
    torch.manual_seed(0)
    model = build_model(cfg, digits.shape, digits.binary)
    nll = evaluate(model, digits.fixed("test")[:50], 50, k=1, chunk=1, seed=0)["nll_exact"]
    assert abs(nll - 784 * math.log(2)) < 60, nll


def test_made_rebuilds_its_cached_masks_when_other_degrees_are_loaded():
    a = build_model(OmegaConf.create({"name": "made", **TINY_AR["made"]}), (1, 4, 4), True).eval()
    b = build_model(OmegaConf.create({"name": "made", **TINY_AR["made"], "seed": 1}), (1, 4, 4), True).eval()
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    with torch.no_grad():
        a.log_prob(x)  # fills a's cache with its own masks
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a.log_prob(x), b.log_prob(x), rtol=0, atol=0)


def test_made_masks_built_while_evaluating_serve_the_next_training_step():
    model = build_model(OmegaConf.create({"name": "made", **TINY_AR["made"]}), (1, 4, 4), True)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    fresh = copy.deepcopy(model)
    with torch.inference_mode():  # validation fills the cache first, as after a resume
        model.eval().log_prob(x)
    for _ in range(model.num_masks):  # each mask set once: the cached ones carry gradients as fresh ones do
        model.train().log_prob(x).sum().backward()
        fresh.train().log_prob(x).sum().backward()
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_made_completes_from_the_conditional_of_its_evaluation_mixture():
    """Masks in one ordering (connectivity-agnostic): the completions follow the mixture's exact
    conditional p(rest | known) = sum_m P(m | known) p_m(rest | known), enumerated over the 2^2
    completions of a 2x2 image with two known pixels; mask 0's conditional alone is far from it."""
    options = {**TINY_AR["made_1mask"], "hidden": [16], "num_masks": 4, "eval_masks": 4}
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(options), (1, 2, 2), True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6)  # peaked conditionals that differ from mask to mask
    known = torch.tensor([1.0, 0.0])
    rests = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
    images = torch.cat([known.expand(4, 2), rests], 1).view(4, 1, 2, 2)
    with torch.no_grad():
        exact = torch.softmax(model.log_prob(images), 0)
        mask0 = torch.softmax(model.log_prob_from_logits(images, model.logits(images, 0)), 0)
        torch.manual_seed(0)
        drawn = model.complete(images[:1].expand(20000, 1, 2, 2), known=2)
    assert (mask0 - exact).abs().max() > 0.05, (mask0, exact)
    assert torch.equal(drawn.flatten(1)[:, :2], known.expand(20000, 2))
    codes = (drawn.flatten(1)[:, 2:] * torch.tensor([2.0, 1.0])).sum(1).long()
    freq = torch.bincount(codes, minlength=4).double() / len(codes)
    torch.testing.assert_close(freq, exact.double(), rtol=0, atol=0.015)
