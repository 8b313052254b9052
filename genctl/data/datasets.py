"""Dataset names -> readers, deterministic train/val/test splits, and the binarization protocol.

Binarization (``dataset.binarize``), the usual protocols for binary pixel models:
  * ``dynamic``: every training batch is a fresh Bernoulli draw with p = intensity; the
    validation and test sets are drawn once, from ``split_seed``, so their numbers are comparable
    across epochs and runs (the usual "dynamically binarized MNIST" protocol).
  * ``static``: every split is drawn once from ``split_seed`` and kept fixed.
  * ``none``: intensities in [0, 1] (continuous models) -- 8-bit data keeps 256 levels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from genctl.data.cifar import read_cifar10
from genctl.data.download import download
from genctl.data.folder import read_image_folder
from genctl.data.idx import read_mnist_layout
from genctl.errors import GenctlError
from genctl.registry import Registry
from genctl.runtime import check_seed

ASSETS = Path(__file__).parent / "assets"
BINARIZE = ("none", "static", "dynamic")

Raw = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _root(cfg: DictConfig) -> Path:
    return Path(str(cfg.root)).expanduser()


def _whole(cfg: DictConfig, key: str) -> int:
    """``dataset.KEY``, which must be a whole number: the dataset's keys are not typed by a schema,
    and a stored checkpoint's config is read here too."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenctlError(f"dataset.{key}={value!r} is not valid: expected a whole number")
    return value


def _image_size(cfg: DictConfig) -> int | None:
    """``dataset.image_size`` where the config sets it (a run trained before it existed does not)."""
    return None if cfg.get("image_size") is None else _whole(cfg, "image_size")


DATASETS: Registry[Callable[[DictConfig], Raw]] = Registry("dataset")


@DATASETS.register("digits")
def _digits(cfg: DictConfig) -> Raw:
    return read_mnist_layout(ASSETS / "digits", "MNIST", "digits", 28)


@DATASETS.register("mnist")
def _mnist(cfg: DictConfig) -> Raw:
    return read_mnist_layout(_root(cfg), "MNIST", "mnist", _image_size(cfg))


@DATASETS.register("fashion_mnist")
def _fashion_mnist(cfg: DictConfig) -> Raw:
    return read_mnist_layout(_root(cfg), "FashionMNIST", "fashion_mnist", _image_size(cfg))


@DATASETS.register("cifar10")
def _cifar10(cfg: DictConfig) -> Raw:
    return read_cifar10(_root(cfg))


@DATASETS.register("image_folder")
def _image_folder(cfg: DictConfig) -> Raw:
    images, labels = read_image_folder(_root(cfg), _whole(cfg, "image_size"), _whole(cfg, "channels"))
    test_idx, train_idx = _split_indices(len(images), _whole(cfg, "test_size"), _whole(cfg, "split_seed") + 1, "test_size")
    return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def _split_indices(n: int, size: int, seed: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 <= size < n:
        raise GenctlError(f"dataset.{key}={size} must be between 0 and {n - 1} (the set has {n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:size].sort().values, perm[size:].sort().values


@dataclass
class DataSplits:
    """uint8 images [N, C, H, W] per split, their class labels, and how pixels are presented."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    labels: dict[str, torch.Tensor]  # split -> int64 [N]
    binarize: str
    split_seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])  # type: ignore[return-value]

    @property
    def binary(self) -> bool:
        return self.binarize != "none"

    @property
    def protocol(self) -> str:
        """What a number measured on these splits was measured on, in one line: every reported
        number carries it (binarization and split sizes move NLLs by whole nats)."""
        pixels = {
            "dynamic": f"dynamic binarization (a fresh draw per training batch; val and test drawn once, seed {self.split_seed})",
            "static": f"one fixed binarization drawn by genctl (seed {self.split_seed}), not a published binarized file",
            "none": "8-bit values (256 levels)",
        }[self.binarize]
        sizes = f"{len(self.train):,} train / {len(self.val):,} val / {len(self.test):,} test"
        return f"{self.name} {'x'.join(map(str, self.shape))}, {sizes}, {pixels}"

    def train_source(self) -> tuple[torch.Tensor, bool]:
        """What training batches are drawn from, and whether each batch is a fresh binarization."""
        if self.binarize == "static":
            return self.fixed("train"), False
        return self.train, self.binarize == "dynamic"

    def fixed(self, split: str) -> torch.Tensor:
        """A split as the float tensor models see, drawn once where binarized (val/test, static)."""
        images = getattr(self, split)
        x = images.float() / 255.0
        if not self.binary:
            return x
        seed = self.split_seed * 1000 + {"train": 1, "val": 2, "test": 3}[split]
        return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def load_dataset(cfg: DictConfig) -> DataSplits:
    """Read ``cfg.name`` and carve ``cfg.val_size`` validation images out of its train split."""
    name = str(cfg.name)
    read = DATASETS.get(name)
    if cfg.binarize not in BINARIZE:
        raise GenctlError(f"dataset.binarize={cfg.binarize} is not one of: {', '.join(BINARIZE)}")
    split_seed, val_size = _whole(cfg, "split_seed"), _whole(cfg, "val_size")
    try:
        check_seed(split_seed, "dataset.split_seed")
    except ValueError as e:
        raise GenctlError(str(e)) from e
    try:
        raw = read(cfg)
    except GenctlError:
        if not cfg.get("download", False):
            raise
        download(name, _root(cfg))
        raw = read(cfg)
    train, train_labels = raw["train"]
    test = raw["test"][0]
    if train.shape[1:] != test.shape[1:]:  # a model is built for the train images, and tested on the test images
        shapes = [f"{'x'.join(map(str, t.shape[1:]))}" for t in (train, test)]
        raise GenctlError(
            f"dataset '{name}' has train images of {shapes[0]} and test images of {shapes[1]}: both splits must hold "
            f"images of one shape; check the files under {cfg.get('root', 'dataset.root')}"
        )
    val_idx, train_idx = _split_indices(len(train), val_size, split_seed, "val_size")
    return DataSplits(
        name=name,
        train=train[train_idx],
        val=train[val_idx],
        test=test,
        labels={"train": train_labels[train_idx], "val": train_labels[val_idx], "test": raw["test"][1]},
        binarize=str(cfg.binarize),
        split_seed=split_seed,
    )
