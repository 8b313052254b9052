"""Feature spaces for sample-quality metrics: a small classifier per dataset family, shipped with genctl.

FID and precision/recall compare two sets of images in the feature space of a trained network.
The usual network, Inception v3, cannot be downloaded at run time on many machines and its
ImageNet features say little about 28x28 grey digits, so genctl ships its own: a small CNN
trained on the training split of MNIST, and one of Fashion-MNIST (``scripts/train_classifier.py``;
provenance and accuracy in ``genctl/assets/README.md``). The features are its penultimate layer.
Numbers measured in these spaces are classifier-feature FIDs, comparable with each other at the
same sample size, never with Inception FIDs from papers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from genctl.errors import GenctlError

# Dataset name -> classifier family. The binarized protocols are MNIST digits too: the
# classifiers were trained with random binarization, so their features of binary images mean something.
FAMILIES = {
    "mnist": "mnist",
    "binarized_mnist": "mnist",
    "dynamic_mnist": "mnist",
    "digits": "mnist",
    "fashion_mnist": "fashion_mnist",
}
# The images every classifier held out of its training: the validation split of
# load_dataset(val_size=10000, split_seed=0) on the official training set (binarized_mnist's
# validation images). Calibration's floor uses them: real images the classifier never saw, as
# a model's samples and the test images are.
HELD_OUT = {"val_size": 10000, "split_seed": 0}
IMAGE_SHAPE = (1, 28, 28)


class Classifier(nn.Module):
    """Three 3x3 conv stages (16, 32, 64 channels, each batch norm, ReLU and 2x2 max-pooling) and a
    128-unit penultimate layer, for 1x28x28 grey levels in [0, 1]; 98k weights (0.4 MB)."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), features: int = 128, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, c_in = IMAGE_SHAPE[1], IMAGE_SHAPE[0]
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c, size // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * size * size, features), nn.ReLU())
        self.head = nn.Linear(features, classes)
        self.num_features = features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's activations [B, num_features]: the space FID is measured in."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class FeatureExtractor:
    """A shipped classifier in evaluation mode, as a map from images to features (on the CPU,
    so a number does not depend on the device that drew the samples)."""

    family: str  # mnist | fashion_mnist
    net: Classifier

    @property
    def num_features(self) -> int:
        return self.net.num_features

    @property
    def label(self) -> str:
        """What every number measured in this space says about itself."""
        return f"classifier-feature FID (genctl {self.family} classifier), not Inception FID"

    def check(self, shape: tuple[int, ...], fix: str = "") -> None:
        """Refuse in one line (ending in ``fix``) images of ``shape`` [C, H, W], which the classifier
        cannot read: ``genctl eval`` asks with the model's shape before it spends any time on the likelihood."""
        if tuple(shape) != IMAGE_SHAPE:
            got = "x".join(map(str, shape))
            raise GenctlError(
                f"the genctl {self.family} classifier takes 1x28x28 images, got {got}" + (f": {fix}" if fix else "")
            )

    def __call__(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Features [N, num_features] of images [N, 1, 28, 28] (floats in [0, 1], or uint8 grey levels)."""
        self.check(tuple(images.shape[1:]))
        with torch.inference_mode():
            chunks = [self.net.features(_grey(batch.cpu())) for batch in images.split(batch_size)]
        return torch.cat(chunks)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def family_of(dataset: str) -> str:
    """The classifier family for a dataset name; one line naming the choices for any other."""
    if dataset not in FAMILIES:
        raise GenctlError(
            f"no feature extractor ships for dataset '{dataset}': sample quality (FID, precision/recall) "
            f"is measured for {', '.join(FAMILIES)} only"
        )
    return FAMILIES[dataset]


def weights_file(family: str) -> str:
    """The asset's name inside the package (``genctl/assets``)."""
    return f"classifier_{family}.safetensors"


def feature_extractor(dataset: str) -> FeatureExtractor:
    """The shipped classifier for ``dataset``, read from the installed package (no download)."""
    return _load(family_of(dataset))


@functools.cache
def _load(family: str) -> FeatureExtractor:
    asset = resources.files("genctl") / "assets" / weights_file(family)
    try:
        weights = load_safetensors(asset.read_bytes())
    except (OSError, SafetensorError) as e:  # a missing file, or not a safetensors file
        raise GenctlError(
            f"genctl's {family} classifier (genctl/assets/{weights_file(family)}) cannot be read ({e}): reinstall genctl"
        ) from e
    net = Classifier()
    net.load_state_dict(weights)
    net.eval().requires_grad_(False)
    return FeatureExtractor(family, net)
