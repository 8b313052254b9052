"""Evaluation with ``eval.compile``: the IWAE pass through torch.compile gives eager's numbers."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from genctl.eval.evaluate import evaluate
from genctl.models import build_model
from genctl.nn.gaussian import reparametrize
from tests.test_fusion import trained_batchnorm


def model_cfg(name: str, **options):
    cfg = OmegaConf.load(f"configs/model/{name}.yaml")
    del cfg["defaults"]
    return OmegaConf.merge(cfg, options)


@pytest.mark.parametrize(
    "name, options",
    [("vae", {"arch": "conv", "channels": [8, 16], "hidden": [32], "latent_dim": 8}), ("hvae", {"channels": 8, "scales": 1})],
)
def test_compiled_iwae_evaluation_equals_eager(digits, name, options):
    """Same draws (Inductor's fallback_random), same bound to float tolerance, and a compiled
    graph did run: k=5 in chunks of 2 leaves a short last chunk, a second shape to compile."""
    torch.manual_seed(0)
    model = build_model(model_cfg(name, **options), digits.shape, digits.binary)
    trained_batchnorm(model)
    x = digits.fixed("test")[:30]
    eager = evaluate(model, x, 15, k=5, chunk=2, seed=3)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = evaluate(model, x, 15, k=5, chunk=2, seed=3, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled.keys() == eager.keys()
    for key, value in eager.items():
        assert compiled[key] == pytest.approx(value, rel=1e-5), key
    assert eager["nll_iwae"] != pytest.approx(evaluate(model, x, 15, k=5, chunk=2, seed=4)["nll_iwae"], rel=1e-6)


def test_posterior_draws_do_not_depend_on_the_memory_layout():
    mean = torch.randn(3, 4, 5, 6)
    logvar = torch.randn(3, 4, 5, 6)
    torch.manual_seed(0)
    plain = reparametrize(mean, logvar)
    torch.manual_seed(0)
    channels_last = reparametrize(*(t.contiguous(memory_format=torch.channels_last) for t in (mean, logvar)))
    torch.testing.assert_close(channels_last, plain, rtol=0, atol=0)
