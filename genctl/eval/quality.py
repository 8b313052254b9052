"""Sample quality: FID and precision/recall of a model's samples in a shipped classifier's feature space.

* FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the features of the
  real and of the generated images, computed by torchmetrics' ``FrechetInceptionDistance`` on
  features genctl extracts itself (:mod:`genctl.eval.features`). Named ``fid_clf``: a
  classifier-feature FID, never comparable with an Inception FID, and like every FID biased by
  the sample size, so numbers are compared at the same ``n`` only.
* Precision and recall (Kynkaenniemi et al. 2019): each set's manifold is the union of balls
  around its points reaching each point's k-th nearest neighbour (k = 3, as in the paper).
  Precision: the fraction of generated images inside the real manifold (are samples realistic?);
  recall: the fraction of real images inside the generated one (is the data covered?). Read them
  together: samples collapsed onto one point that falls in a wide ball around an unusual real
  image score precision 1 and recall 0 (an untrained Fashion-MNIST VAE, whose samples are all
  the same flat grey, does).

``n`` generated images are scored against ``n`` real ones (a seeded choice from the split, or
all of a smaller split): precision and recall depend on both sizes, and are symmetric when they
are equal. :func:`calibration` gives the two ends of the scale for a dataset.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluating
from genctl.eval.features import HELD_OUT, FeatureExtractor, feature_extractor
from genctl.models.base import GenerativeModel, Sampler
from genctl.runs.record import evaluation_name
from genctl.runtime import check_fits

K = 3  # nearest neighbours that set a point's radius (Kynkaenniemi et al. 2019)
CHUNK = 1000  # rows of one block of pairwise distances: CHUNK x N floats in memory


class _Given(nn.Module):
    """Features already extracted, passed through: torchmetrics' FID takes a feature module, and
    genctl extracts once for FID and precision/recall."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, F] (float64 statistics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # a second or two to import: only when asked

    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return max(0.0, float(metric.compute()))  # a distance: below zero only by rounding, for identical sets


def knn_radii(points: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance from every point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(block, points).kthvalue(k + 1, dim=1).values for block in points.split(CHUNK)])


def covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of ``points`` inside at least one ball (``centres``, ``radii``)."""
    inside = [(torch.cdist(block, centres) <= radii).any(dim=1) for block in points.split(CHUNK)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of two feature sets [N, F]."""
    if min(len(real), len(fake)) <= k:
        raise GenctlError(
            f"precision/recall need more than k={k} images in each set, got {len(real)} real, {len(fake)} generated"
        )
    return covered(fake, real, knn_radii(real, k)), covered(real, fake, knn_radii(fake, k))


def quality(fake: torch.Tensor, real: torch.Tensor, extractor: FeatureExtractor) -> dict[str, Any]:
    """``fid_clf``, ``precision_clf`` and ``recall_clf`` of images ``fake`` against ``real`` (each
    [N, 1, 28, 28] in [0, 1]), with what was measured in ``feature_space``."""
    real_f, fake_f = extractor(real), extractor(fake)
    precision, recall = precision_recall(real_f, fake_f)
    return {
        "fid_clf": fid(real_f, fake_f),
        "precision_clf": precision,
        "recall_clf": recall,
        "n_real": len(real),
        "n_fake": len(fake),
        "feature_space": f"{extractor.label}; precision/recall with k={K} nearest neighbours",
    }


def quality_line(metrics: dict[str, Any]) -> str:
    """One line: ``fid_clf 1.23, precision_clf 0.712, recall_clf 0.654 (10000 vs 10000 images; classifier-feature FID ...)``."""
    numbers = (
        f"fid_clf {metrics['fid_clf']:.4g}, precision_clf {metrics['precision_clf']:.3f}, recall_clf {metrics['recall_clf']:.3f}"
    )
    return f"{numbers} ({metrics['n_fake']} generated vs {metrics['n_real']} real images; {metrics['feature_space']})"


def subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` images chosen with ``seed`` (in their order), or all of them when there are no more."""
    if n >= len(images):
        return images
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[chosen.sort().values]


def draw(model: GenerativeModel, n: int, seed: int, batch_size: int, progress: bool = False) -> torch.Tensor:
    """``n`` images from the distribution of a :class:`Sampler` model, on the CPU, repeatably for one ``seed``.

    A model of binary images gives binary images: a latent-variable model's ``sample`` returns the
    mean of p(x | z), which is drawn from here (autoregressive samples are binary already), so
    every binary model is scored the same way, against the split binarized as it was trained on.
    """
    if not isinstance(model, Sampler):
        raise GenctlError(f"{type(model).__name__} cannot draw samples, so sample quality (fid) cannot be measured for it")
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    batches = []
    with evaluating(model, seed):
        for size in tqdm(sizes, desc="samples", leave=False, disable=not progress):
            images = model.sample(size)
            batches.append((torch.bernoulli(images) if model.binary else images).cpu())
    return torch.cat(batches)


def sample_quality(
    model: GenerativeModel,
    real: torch.Tensor,
    extractor: FeatureExtractor,
    n: int,
    seed: int,
    batch_size: int,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`quality` of ``n`` samples of ``model`` against ``n`` of the ``real`` images (all of
    them when they are fewer), both chosen from ``seed``."""
    fake = draw(model, n, seed, batch_size, progress)
    return quality(fake, subset(real, n, seed), extractor)


def check_memory(n: int, data_shape: tuple[int, ...], extractor: FeatureExtractor, setting: str = "eval.num_samples") -> None:
    """Refuse in one line, before any work, ``n`` samples that cannot fit in memory: :func:`sample_quality`
    keeps every sample (twice while their batches are joined) and its features, in float32 and
    again in float64 for FID (the real images, as many, come on top)."""
    per_sample = 2 * 4 * math.prod(data_shape) + (4 + 8) * extractor.num_features
    check_fits(n, per_sample, setting, "the samples and features FID keeps")


def quality_name(split: str, checkpoint: str) -> str:
    """Where genctl eval files sample quality in metrics.json, beside ``<split>@<checkpoint>``'s NLL."""
    return evaluation_name(f"sample_quality_{split}", checkpoint)


def calibration(
    dataset: DictConfig, untrained: GenerativeModel, n: int = 10000, seed: int = 0, batch_size: int = 500
) -> dict[str, dict[str, Any]]:
    """The two ends of the scale for ``dataset`` (a ``configs/dataset`` node), at ``n`` images.

    ``floor``: ``n`` real images the classifier never saw (held out of the training split,
    :data:`genctl.eval.features.HELD_OUT`) against ``n`` test images, what a perfect model would
    score. ``ceiling``: ``n`` samples of ``untrained`` (a freshly initialised model) against the
    same test images. Both binarized as the dataset's protocol binarizes its splits.
    """
    if dataset.name not in ("mnist", "fashion_mnist"):
        raise GenctlError(
            f"calibration needs the training split the classifiers held images out of: mnist or fashion_mnist, not {dataset.name}"
        )
    data = load_dataset(OmegaConf.merge(dataset, HELD_OUT))
    extractor = feature_extractor(data.name)
    test = subset(data.fixed("test"), n, seed)
    return {
        "floor": quality(subset(data.fixed("val"), n, seed), test, extractor),
        "ceiling": sample_quality(untrained, test, extractor, n, seed, batch_size),
    }
