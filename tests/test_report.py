"""Bits per dimension follow what the model's likelihood is (a mass or a density), not the data."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genctl.eval.evaluate import evaluate
from genctl.eval.report import label_estimates
from genctl.models import build_model
from genctl.models.latent import LatentVariableModel
from genctl.nn.likelihoods import DiscretizedLogisticMixture

SHAPE = (1, 4, 4)


def images(binary: bool, n: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if binary:
        return torch.bernoulli(torch.full((n, *SHAPE), 0.5), generator=g)
    return torch.randint(0, 256, (n, *SHAPE), generator=g).float() / 255


@pytest.mark.parametrize("binary, bits", [(True, 1.0), (False, 8.0)])
def test_a_uniform_autoregressive_model_scores_one_bit_binary_and_eight_bits_8bit(binary, bits):
    model = build_model(OmegaConf.create({"name": "fvsbn"}), SHAPE, binary)  # zero weights: uniform
    report = label_estimates(evaluate(model, images(binary), 10, k=1, chunk=1, seed=0), model, k=1)
    assert report["nll_exact"]["bits_per_dim"] == pytest.approx(bits, abs=1e-6)
    assert report["nll_exact"]["estimator"] == "exact" and "note" not in report["nll_exact"]


class UniformLogisticMixture(LatentVariableModel):
    """A latent model whose decoder ignores z and puts one sharp logistic on every 8-bit value
    with equal weights: p(x | z) is uniform over the 256 values to ~1e-4, and q = p(z) makes the
    ELBO and the IWAE bound exact."""

    def __init__(self) -> None:
        super().__init__(SHAPE, binary=False)
        self.latent_dim = 2
        self.likelihood = DiscretizedLogisticMixture(256)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        zeros = x.new_zeros(len(x), self.latent_dim)
        return zeros, zeros

    def decode(self, z):
        centres = torch.arange(256, dtype=z.dtype) / 255 * 2 - 1
        params = torch.stack([torch.zeros(256), centres, torch.full((256,), -7.0)])  # logits, means, log-scales
        return params.reshape(1, 3 * 256, 1, 1).expand(len(z), -1, *SHAPE[1:])


def test_a_uniform_discretized_logistic_mixture_scores_eight_bits():
    model = UniformLogisticMixture()
    report = label_estimates(evaluate(model, images(False), 10, k=4, chunk=2, seed=0), model, k=4)
    for name in ("nll_elbo", "nll_iwae"):
        assert report[name]["bits_per_dim"] == pytest.approx(8.0, abs=1e-3)
        assert "note" not in report[name]
    assert report["nll_iwae"]["estimator"] == "IWAE bound, k=4"


def test_the_gaussian_decoders_number_states_its_offset_and_dequantization():
    cfg = {"name": "vae", "arch": "mlp", "latent_dim": 2, "hidden": [8], "channels": [4], "activation": "relu"}
    options = {"downsample": "stride", "observation": "gaussian", "mixtures": 1, "obs_sigma": 0.1}
    model = build_model(OmegaConf.create({**cfg, **options}), SHAPE, binary=False)
    report = label_estimates(evaluate(model, images(False), 10, k=2, chunk=2, seed=0), model, k=2)
    entry = report["nll_iwae"]
    dims = math.prod(SHAPE)
    assert entry["bits_per_dim"] == pytest.approx((entry["nats"] + dims * math.log(256)) / (dims * math.log(2)))
    assert "ln 256" in entry["note"] and "dequantization" in entry["note"]
    assert report["kl"] > 0  # numbers that are not likelihoods pass through unlabelled
