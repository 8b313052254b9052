"""The hierarchical VAE (genctl/models/hvae.py): per-group KLs, the one-group reduction to a plain
VAE, deterministic temperature-0 samples, the 8-bit likelihood, KL balancing."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genctl.eval.estimators import estimates
from genctl.losses.elbo import ELBO
from genctl.models import build_model
from genctl.models.hvae import gaussian_kl, gaussian_log_density
from genctl.models.latent import LatentVariableModel
from genctl.nn.cells import SqueezeExcite
from genctl.nn.likelihoods import DiscretizedLogisticMixture


def hvae(shape=(1, 8, 8), binary=True, **kw):
    cfg = OmegaConf.load("configs/model/hvae.yaml")
    del cfg["defaults"]
    cfg = OmegaConf.merge(cfg, {"channels": 8, "latent_channels": 2, "mixtures": 2, **kw})
    torch.manual_seed(0)
    return build_model(cfg, shape, binary)


def binary_images(n: int, shape=(1, 8, 8)) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=torch.Generator().manual_seed(1)) < 0.4).float()


def test_each_groups_analytic_kl_matches_a_monte_carlo_estimate():
    model = hvae().eval()
    x = binary_images(2)
    with torch.no_grad():
        _, record = model.top_down(2, model.encoding(x))
        assert len(record) == 4
        for _z, p, q in record:
            kl = gaussian_kl(q, p)
            mean, logvar = q
            s = 20000
            draws = (mean + torch.randn(s, *mean.shape) * torch.exp(0.5 * logvar)).flatten(0, 1)  # [S * B, ...]
            q_s, p_s = ([t.repeat(s, 1, 1, 1) for t in d] for d in (q, p))
            ratio = (gaussian_log_density(draws, q_s) - gaussian_log_density(draws, p_s)).view(s, -1)
            se = ratio.std(0) / math.sqrt(len(ratio))
            assert (kl > 0).all()
            assert ((ratio.mean(0) - kl).abs() < 4 * se + 1e-4).all(), (ratio.mean(0), kl, se)


def test_one_group_is_a_plain_conv_vae_elbo_and_iwae():
    model = hvae(scales=1, groups_per_scale=1).eval()
    x = binary_images(6)
    with torch.no_grad():
        torch.manual_seed(3)
        hier = model.elbo_terms(x)
        torch.manual_seed(3)
        plain = LatentVariableModel.elbo_terms(model, x)  # encode / reparametrize / decode, KL to N(0, I)
        for a, b in zip(hier, plain):
            torch.testing.assert_close(a, b)
        torch.manual_seed(4)
        hier_w = model.log_weights(x, 5)
        torch.manual_seed(4)
        plain_w = LatentVariableModel.log_weights(model, x, 5)
    torch.testing.assert_close(hier_w, plain_w, rtol=1e-5, atol=1e-4)


def test_elbo_sums_group_kls_and_stays_below_the_iwae_bound():
    model = hvae().eval()
    x = binary_images(16)
    with torch.no_grad():
        m = estimates(model, x, 200, 50)
    assert (m["kl"] > 0).all()
    assert m["nll_iwae"].mean() < m["nll_elbo"].mean()


def test_temperature_zero_samples_are_deterministic():
    model = hvae().eval()
    with torch.no_grad():
        torch.manual_seed(0)
        a = model.sample(3, temperature=0.0)
        torch.manual_seed(1)
        b = model.sample(3, temperature=0.0)
        c = model.sample(3, temperature=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1


def test_discretized_logistic_mixture_is_a_distribution_over_the_256_values():
    lik = DiscretizedLogisticMixture(3)
    out = torch.randn(1, 9, 1, 1, generator=torch.Generator().manual_seed(0))
    out[:, 6:] = torch.tensor([-4.0, -1.0, 0.5]).view(1, 3, 1, 1)  # sharp and wide components
    values = (torch.arange(256).float() / 255).view(256, 1, 1, 1)
    total = torch.logsumexp(lik.log_prob(values, out.expand(256, -1, -1, -1)), 0)
    torch.testing.assert_close(total, torch.tensor(0.0), atol=1e-5, rtol=0)


def test_8bit_colour_images_train_and_sample():
    model = hvae(shape=(3, 8, 8), binary=False)
    x = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255
    out = ELBO(1.0, 0, False)(model, x, 0)
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert 0 < out["nelbo"] / (3 * 64 * math.log(256)) < 3  # in the range of a uniform model's 8 bits/dim
    with torch.no_grad():
        images = model.eval().sample(2)
    assert images.shape == (2, 3, 8, 8) and 0 <= images.min() and images.max() <= 1


def test_kl_balancing_weights_groups_by_kl_per_unit_during_warmup_only():
    """NVAE's kl_balancer: gamma_l proportional to mean KL_l / size_l (plus 0.01), averaging 1."""
    loss = ELBO(1.0, 100, balance=True)
    kl = torch.tensor([[1.0, 3.0], [3.0, 5.0]])  # batch means 2 and 4
    sizes = torch.tensor([1.0, 4.0])
    gamma = loss.group_weights(kl, sizes, step=10)
    expected = torch.tensor([2.01 / 1, 4.01 / 4])
    torch.testing.assert_close(gamma, expected / expected.mean())
    equal_per_unit = loss.group_weights(sizes[None] * 3 - 0.01, sizes, step=10)  # 3 nats per unit everywhere
    torch.testing.assert_close(equal_per_unit, torch.ones(2))
    assert torch.equal(loss.group_weights(kl, sizes, step=100), torch.ones(2))
    assert torch.equal(ELBO(1.0, 100, balance=False).group_weights(kl, sizes, step=10), torch.ones(2))


def has_switch_on(model, switch: str) -> bool:
    """Whether the structure a switch controls is in the built model (or, for the posterior's
    parametrization, in what it computes)."""
    if switch == "residual_posterior":  # a residual posterior moves with its prior
        e, share = torch.randn(1, 8, 2, 2), torch.randn(1, 4, 2, 2)
        zeros = torch.zeros(1, 2, 2, 2)
        with torch.no_grad():
            q0, q1 = model.posterior(1, e, share, (zeros, zeros)), model.posterior(1, e, share, (zeros + 1, zeros))
        return not torch.equal(q0[0], q1[0])
    kinds = {
        "separable": lambda m: isinstance(m, torch.nn.Conv2d) and m.groups > 1,
        "batchnorm": lambda m: isinstance(m, torch.nn.BatchNorm2d),
        "se": lambda m: isinstance(m, SqueezeExcite),
    }
    return any(kinds[switch](m) for m in model.modules())


@pytest.mark.parametrize("switch", ["residual_posterior", "separable", "batchnorm", "se"])
def test_every_nvae_switch_can_be_turned_off(switch):
    assert has_switch_on(hvae(), switch)
    model = hvae(**{switch: False})
    assert not has_switch_on(model, switch)
    out = ELBO(1.0, 0, False)(model, binary_images(4), 0)
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())


def test_the_regularizers_can_be_turned_off():
    assert hvae(spectral=0.01, bn_penalty=0.0).penalty().item() > 0
    assert hvae(spectral=0.0, bn_penalty=0.01).penalty().item() > 0
    assert float(hvae(spectral=0.0, bn_penalty=0.0).penalty()) == 0.0


def largest_singular_values(model) -> torch.Tensor:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return sum(torch.linalg.matrix_norm(c.weight.flatten(1), ord=2) for c in convs)


def test_spectral_penalty_estimates_the_largest_singular_value_from_the_first_step():
    """NVAE's schedule: 4 power iterations per step, 40 on the first from the random start, so
    the very first penalty is already the sum of sigma_max (1 iteration from random is not)."""
    model = hvae(spectral=1.0, bn_penalty=0.0)
    torch.testing.assert_close(model.penalty(), largest_singular_values(model), rtol=5e-3, atol=0)
    for _ in range(5):
        penalty = model.penalty()
    torch.testing.assert_close(penalty, largest_singular_values(model), rtol=1e-3, atol=0)
    one = hvae(spectral=1.0, bn_penalty=0.0, power_iterations=1)
    one.spectral_started.fill_(True)  # no warm-up: one iteration from the random start
    assert one.penalty() < 0.9 * largest_singular_values(one)


def test_batchnorm_penalty_is_the_largest_scale_of_every_batchnorm():
    model = hvae(spectral=0.0, bn_penalty=0.5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for i, bn in enumerate(norms):
            bn.weight.fill_(0.1).__setitem__(0, -(i + 1.0))  # the largest |scale| of BN i is i + 1
    penalty = model.penalty()
    assert penalty.item() == pytest.approx(0.5 * sum(i + 1.0 for i in range(len(norms))))
    penalty.backward()
    assert all(bn.weight.grad[0] == -0.5 for bn in norms)


@pytest.mark.parametrize("clamp", [5.0, 0.0])
def test_soft_clamp_bounds_every_gaussians_mean_and_log_std(clamp):
    model = hvae(soft_clamp=clamp)
    with torch.no_grad():
        for conv in [*model.posteriors, *model.priors]:
            conv.weight.mul_(1000)
        _, record = model.top_down(4, model.encoding(binary_images(4)))
    params = torch.cat([t.flatten() for _, p, q in record for t in (*p, *q)])
    means = torch.cat([t.flatten() for _, p, q in record for t in (p[0], q[0])])
    logvars = torch.cat([t.flatten() for _, p, q in record for t in (p[1], q[1])])
    bounded = bool(means.abs().max() <= 5 and logvars.abs().max() <= 10)
    assert bounded == bool(clamp), params.abs().max()


def test_posterior_head_split_into_state_and_encoder_shares_is_the_head_on_both():
    """log_weights computes the encoder's share of each posterior once per image: with the state's
    share it must give the head convolution of ELU([h, f]) it stands for."""
    model = hvae().eval()
    x = binary_images(3)
    with torch.no_grad():
        features, shares = model.bottom_up(x), model.encoding(x)
        h = torch.randn(3, 8, *features[1].shape[2:])
        zeros = torch.zeros(3, 2, *features[1].shape[2:])
        mean, logvar = model.posterior(1, torch.nn.functional.elu(h), shares[1], (zeros, zeros))
        whole = model.posteriors[1](torch.nn.functional.elu(torch.cat([h, features[1]], 1)))
    torch.testing.assert_close(torch.cat([mean, logvar], 1), torch.cat(model.clamped(*whole.chunk(2, 1)), 1))


def test_checkpoints_from_when_the_heads_held_their_elu_still_load():
    model = hvae()
    old = {}
    for key, value in model.state_dict().items():
        head, *rest = key.split(".")
        old[".".join([head, rest[0], "1", *rest[1:]]) if head in ("priors", "posteriors") else key] = value + 1
    assert "posteriors.0.1.weight" in old
    fresh = hvae()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.posteriors[0].weight, model.posteriors[0].weight + 1)
