"""BatchNorm folded into the convolution beside it, for evaluation only.

In eval mode a BatchNorm is a fixed per-channel affine map, so next to a convolution it can be
merged into that convolution's weights and bias: the same function to float tolerance, one pass
over the feature map fewer. NVAE-style cells put BatchNorm on both sides of their convolutions,
and on a CPU the IWAE evaluation of such a model spends about a tenth of its time in them.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

M = TypeVar("M", bound=nn.Module)


def fold_batchnorm(model: M) -> M:
    """A copy of ``model`` (in eval mode) in which every BatchNorm2d that directly follows a
    Conv2d in an ``nn.Sequential``, or directly precedes a 1x1 unpadded, ungrouped Conv2d, is
    folded into that convolution; ``model`` itself is left as it is, and returned as it is when
    it holds no BatchNorm."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fold_in(module)
    return folded


def _fold_in(seq: nn.Sequential) -> None:
    """Fold neighbouring pairs in place; a folded convolution can take the next BatchNorm too."""
    layers = list(seq)
    i = 0
    while i + 1 < len(layers):
        layer, after = layers[i], layers[i + 1]
        if isinstance(layer, nn.Conv2d) and isinstance(after, nn.BatchNorm2d):
            layers[i : i + 2] = [_like(layer, fuse_conv_bn_eval(layer, after))]
        elif isinstance(layer, nn.BatchNorm2d) and _pointwise(after):
            layers[i : i + 2] = [_like(after, _bn_into_pointwise(layer, after))]
        else:
            i += 1
    if len(layers) < len(seq):
        for name in list(seq._modules):
            del seq._modules[name]
        for index, layer in enumerate(layers):
            seq.add_module(str(index), layer)


def _pointwise(layer: nn.Module | None) -> bool:
    return (
        isinstance(layer, nn.Conv2d)
        and layer.kernel_size == (1, 1)
        and layer.padding in ((0, 0), "valid")
        and layer.groups == 1
        and layer.stride == (1, 1)
    )


def _bn_into_pointwise(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """conv(bn(x)) as one convolution: bn(x) = s * x + t per channel, so W' = W * s and
    b' = b + W t (exact for a 1x1 convolution without padding)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        w = conv.weight.flatten(1)  # [out, in]
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        fused.weight.copy_(conv.weight * scale[None, :, None, None])
        if fused.bias is None:
            fused.bias = nn.Parameter(torch.zeros_like(bias))
        fused.bias.copy_(bias + w @ shift)
    return fused


def _like(original: nn.Module, fused: nn.Conv2d) -> nn.Conv2d:
    """Keep the original weight's memory format (channels-last convolutions stay so)."""
    if original.weight.is_contiguous(memory_format=torch.channels_last) and not original.weight.is_contiguous():
        fused.to(memory_format=torch.channels_last)
    return fused
