"""BatchNorm folded into convolutions for evaluation: the same numbers, fewer layers."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from genctl.eval.fusion import fold_batchnorm
from genctl.models import build_model


def trained_batchnorm(model: nn.Module) -> None:
    """Running statistics and affine parameters away from their initial 0/1, as after training."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            for t in (bn.weight, bn.bias, bn.running_mean):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
            bn.weight.add_(1.0)


def test_folding_conv_then_bn_and_bn_then_pointwise_conv_keeps_the_function():
    seq = nn.Sequential(
        nn.BatchNorm2d(4), nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6), nn.SiLU(), nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
    )
    trained_batchnorm(seq)
    folded = fold_batchnorm(seq)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in seq.modules()) == 3  # the original is untouched
    x = torch.randn(5, 4, 7, 7)
    torch.testing.assert_close(folded(x), seq.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_batchnorm_before_a_padded_convolution_stays():
    seq = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1))  # the zero border would see BN's shift
    assert isinstance(fold_batchnorm(seq)[0], nn.BatchNorm2d)


def test_hvae_log_weights_are_unchanged_by_folding():
    cfg = OmegaConf.load("configs/model/hvae.yaml")
    del cfg["defaults"]
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28), True).eval()
    trained_batchnorm(model)
    folded = fold_batchnorm(model)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert after < before / 3, (before, after)  # only the BNs in front of an activation remain
    x = (torch.rand(4, 1, 28, 28) > 0.7).float()
    with torch.no_grad():
        torch.manual_seed(1)
        expected = model.log_weights(x, 3)
        torch.manual_seed(1)
        got = folded.log_weights(x, 3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
