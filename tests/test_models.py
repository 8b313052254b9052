"""Likelihood estimators against an exact model, and the VAE/AE models and losses."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genctl.config import build
from genctl.errors import GenctlError
from genctl.eval.estimators import estimates
from genctl.eval.evaluate import evaluate
from genctl.losses import build_loss
from genctl.losses.elbo import ELBO
from genctl.models import MODELS, build_model
from genctl.models.latent import LatentVariableModel
from genctl.nn.likelihoods import Gaussian


class ProbabilisticPCA(LatentVariableModel):
    """x = W z + b + N(0, sigma^2 I), z ~ N(0, I): log p(x) = log N(x; b, W W^T + sigma^2 I) exactly.

    W has orthogonal columns, so the exact posterior is diagonal and q can be made exact.
    """

    def __init__(self, latent_dim: int = 2, sigma: float = 0.5, exact_posterior: bool = True) -> None:
        super().__init__((1, 2, 3), binary=False)
        g = torch.Generator().manual_seed(0)
        d = 6
        q, _ = torch.linalg.qr(torch.randn(d, latent_dim, generator=g, dtype=torch.float64))
        self.W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_dim]
        self.b = torch.randn(d, generator=g, dtype=torch.float64)
        self.latent_dim, self.sigma = latent_dim, sigma
        self.likelihood = Gaussian(sigma)
        m = self.W.T @ self.W + sigma**2 * torch.eye(latent_dim, dtype=torch.float64)  # diagonal
        self.A = torch.linalg.solve(m, self.W.T)
        self.logvar = torch.log(sigma**2 / torch.diagonal(m))
        if not exact_posterior:  # a deliberately wrong q: biased mean, too wide
            self.A = self.A * 0.8
            self.logvar = self.logvar + 1.0
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so .device works

    def encode(self, x):
        mu = (x.flatten(1) - self.b) @ self.A.T
        return mu, self.logvar.expand_as(mu)

    def decode(self, z):
        return (z @ self.W.T + self.b).view(-1, *self.data_shape)

    def exact_log_prob(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(6, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.flatten(1))

    def draw(self, n: int):
        g = torch.Generator().manual_seed(1)
        z = torch.randn(n, self.latent_dim, generator=g, dtype=torch.float64)
        return self.decode(z) + self.sigma * torch.randn(n, *self.data_shape, generator=g, dtype=torch.float64)


def test_iwae_with_the_exact_posterior_equals_the_exact_likelihood():
    model = ProbabilisticPCA(exact_posterior=True)
    x = model.draw(200)
    exact = model.exact_log_prob(x)
    for k in (1, 7, 64):
        out = estimates(model, x, k, 5)
        torch.testing.assert_close(-out["nll_iwae"], exact, rtol=0, atol=1e-9)
    # the analytic-KL ELBO is exact only in expectation over z: compare means over the images
    elbo = -estimates(model, x, 1, 1)["nll_elbo"]
    assert abs(elbo.mean() - exact.mean()) < 4 * elbo.sub(exact).std() / math.sqrt(len(x))


def test_elbo_below_iwae_below_exact_and_iwae_tightens_with_k():
    model = ProbabilisticPCA(exact_posterior=False)
    x = model.draw(400)
    exact = model.exact_log_prob(x).mean().item()
    nlls = {k: evaluate(model, x, 400, k, 50, seed=0) for k in (10, 100, 1000)}
    elbo = -nlls[10]["nll_elbo"]
    bounds = [-nlls[k]["nll_iwae"] for k in (10, 100, 1000)]
    assert elbo < exact - 0.1, "the wrong posterior must leave a visible gap"
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] <= exact + 1e-3
    assert exact - bounds[-1] < 0.25 * (exact - elbo)


AE = {"name": "ae", "arch": "mlp", "latent_dim": 4, "hidden": [8], "channels": [4], "activation": "relu", "downsample": "stride"}


def vae_cfg(**kw):
    base = {
        "name": "vae",
        "arch": "mlp",
        "latent_dim": 8,
        "hidden": [64],
        "channels": [8, 16],
        "activation": "relu",
        "downsample": "stride",
        "observation": "gaussian",
        "mixtures": 10,
        "obs_sigma": 0.1,
    }
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_fresh_vae_scores_real_digits_near_784_ln2(digits, arch):
    """A model that has learnt nothing assigns about 1/2 per binary pixel: 784 ln 2 = 543 nats."""
    torch.manual_seed(0)
    model = build_model(vae_cfg(arch=arch), digits.shape, digits.binary)
    nll = evaluate(model, digits.fixed("test")[:100], 100, k=8, chunk=8, seed=0)
    assert 784 * math.log(2) - 60 < nll["nll_iwae"] <= nll["nll_elbo"] < 784 * math.log(2) + 60


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae_shapes_samples_and_reconstructions(digits, arch):
    model = build_model(vae_cfg(arch=arch), digits.shape, digits.binary)
    x = digits.fixed("test")[:5]
    assert model.log_weights(x, 3).shape == (3, 5)
    for images in (model.sample(4), model.reconstruct(x)):
        assert images.shape[1:] == (1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_conv_arch_rejects_sizes_it_cannot_halve(digits):
    with pytest.raises(GenctlError, match="divisible by 8"):
        build_model(vae_cfg(arch="conv", channels=[4, 4, 4]), (1, 28, 28), True)


def test_model_options_are_checked_by_name_and_type(digits):
    with pytest.raises(GenctlError, match="no option 'latnt_dim'.*latent_dim"):
        build_model(OmegaConf.merge(vae_cfg(), {"latnt_dim": 3}), digits.shape, True)
    with pytest.raises(GenctlError, match="latent_dim='x' is not valid.*int"):
        build_model(vae_cfg(latent_dim="x"), digits.shape, True)
    with pytest.raises(GenctlError, match="latent_dim must be >= 1, got 0"):
        build_model(vae_cfg(latent_dim=0), digits.shape, True)
    with pytest.raises(GenctlError, match="arch='deep' is not valid.*mlp, conv"):
        build_model(vae_cfg(arch="deep"), digits.shape, True)
    with pytest.raises(GenctlError, match=f"unknown model 'vaee'; choose one of: {', '.join(MODELS.names())}$"):
        build_model(vae_cfg(name="vaee"), digits.shape, True)


def test_elbo_loss_scaling_and_kl_warmup(digits):
    torch.manual_seed(0)
    model = build_model(vae_cfg(), digits.shape, True)
    loss = build("loss 'elbo'", ELBO, {"beta": 2.0, "kl_warmup_steps": 100, "balance": False})
    assert [loss.kl_weight(s) for s in (0, 50, 100, 1000, None)] == [0.0, 1.0, 2.0, 2.0, 2.0]
    x = digits.fixed("test")[:64]
    torch.manual_seed(1)
    out = loss(model, x, 50)
    torch.manual_seed(1)
    log_px_z, kl = model.elbo_terms(x)
    torch.testing.assert_close(out["recon"], -log_px_z.mean())  # positive nats per image
    torch.testing.assert_close(out["kl"], kl.mean())
    assert out["kl"] > 0 and out["recon"] > 0
    torch.testing.assert_close(out["loss"], out["recon"] + 1.0 * out["kl"])
    torch.testing.assert_close(out["nelbo"], out["recon"] + out["kl"])


def test_loss_must_fit_the_model(digits):
    ae = build_model(OmegaConf.create(AE), digits.shape, True)
    with pytest.raises(GenctlError, match="loss 'elbo' needs one of the models hvae, vae; model 'ae' trains with: mse"):
        build_loss(OmegaConf.create({"name": "elbo", "beta": 1.0, "kl_warmup_steps": 0, "balance": False}), ae, "ae")


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_loss_is_the_exact_nll_with_the_exact_posterior_and_tightens_otherwise(k):
    from genctl.losses.iwae import IWAE

    exact = ProbabilisticPCA(exact_posterior=True)
    x = exact.draw(300)
    out = IWAE(k)(exact, x, step=None)
    torch.testing.assert_close(out["loss"], -exact.exact_log_prob(x).mean(), rtol=0, atol=1e-9)
    wrong = ProbabilisticPCA(exact_posterior=False)
    torch.manual_seed(0)
    loose, tight = IWAE(1)(wrong, x, None)["loss"], IWAE(50)(wrong, x, None)["loss"]
    assert -wrong.exact_log_prob(x).mean() < tight < loose - 0.05


def test_a_model_learns_its_obligations_from_the_capabilities_it_declares():
    from genctl.models.base import GenerativeModel, Sampler

    class Incomplete(GenerativeModel, Sampler):
        pass

    with pytest.raises(TypeError, match="abstract method.*sample"):
        Incomplete((1, 2, 2), True)


def test_evaluation_applies_the_estimators_each_capability_allows(digits):
    x = digits.fixed("test")[:4]
    models = {
        "ae": build_model(OmegaConf.create(AE), digits.shape, True),
        "vae": build_model(vae_cfg(), digits.shape, True),
        "fvsbn": build_model(OmegaConf.create({"name": "fvsbn"}), digits.shape, True),
    }
    with torch.no_grad():
        found = {name: set(estimates(model, x, 2, 1)) for name, model in models.items()}
    assert found == {"ae": {"mse", "psnr"}, "vae": {"nll_elbo", "nll_iwae", "kl"}, "fvsbn": {"nll_exact"}}


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_both_resampling_forms_give_every_observation_models_shapes(digits, arch, downsample):
    x = digits.fixed("test")[:3]
    for binary, observation, channels in ((True, "gaussian", 1), (False, "logistic", 30), (False, "gaussian", 1)):
        model = build_model(vae_cfg(arch=arch, downsample=downsample, observation=observation), digits.shape, binary)
        assert model.decode(torch.zeros(3, 8)).shape == (3, channels, 28, 28)
        assert model.log_weights(x, 2).shape == (2, 3)
        assert model.likelihood.discrete == (binary or observation == "logistic")
    uses_pooling = any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert uses_pooling == (arch == "conv" and downsample == "maxpool")


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_every_parameter_of_every_model_gets_a_gradient_from_its_loss(name):
    """A parameter the loss never reaches is dead weight in the size, the optimizer and the
    checkpoint (the Gated PixelCNN's last layer once carried a residual 1x1 nothing read)."""
    from hydra import compose, initialize_config_dir

    from genctl.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=[f"model={name}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 12, 12), binary=True)
    loss = build_loss(cfg.loss, model, name)
    loss(model, torch.rand(4, 1, 12, 12).round(), step=0)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing
