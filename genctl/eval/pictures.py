"""Pictures of what a latent model learned: a map of its codes by class, and latent traversals.

- The map: every labelled test image's posterior mean on a plane, coloured by its class. With a
  2-unit code the plane is the code itself (Kingma & Welling, "Auto-Encoding Variational Bayes",
  ICLR 2014, figure 4's two-dimensional latent space); with more units it is the code's first two
  principal components (Pearson 1901; an SVD of the centred codes), the flat picture that keeps
  the most of their spread. A model never told the classes that still puts them in separate
  places has learned what tells digits apart; a conditional model, told the class, should not.
- A traversal (Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
  Variational Framework", ICLR 2017, figures 1-2): one test image's code, with one unit moved
  from -span to +span prior standard deviations and every other unit kept, decoded: each row
  shows what one unit draws. Rows go from the most active unit down (activity as in Burda et
  al. 2016, :func:`genctl.eval.latent.unit_activity`), so the rows shown are the units in use.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from genctl.errors import GenctlError
from genctl.eval.latent import codes, unit_activity
from genctl.models.base import GenerativeModel, Reconstructs, is_conditional
from genctl.runs.atomic import atomic_write

log = logging.getLogger("genctl")

MAP_PIXELS = 640  # the map is a square PNG of this side
DPI = 100


def labelled(labels: torch.Tensor | None) -> bool:
    """Whether ``labels`` hold at least two classes: an image folder without class sub-folders
    labels every image 0, and a map coloured by one class shows nothing about classes."""
    return labels is not None and len(labels) > 0 and int(labels.min()) != int(labels.max())


def check_mappable(labels: torch.Tensor | None, dataset: str) -> torch.Tensor:
    """``labels`` if the map can be coloured by them, else one line saying what to use instead."""
    if labels is None or not labelled(labels):
        raise GenctlError(
            f"dataset '{dataset}' has no class labels (at most one class), so the latent map has nothing to colour "
            "its codes by; use a labelled dataset (mnist, fashion_mnist, cifar10, digits, or an image folder with one "
            "sub-folder per class), or mode=traverse"
        )
    return labels


def project(means: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """Points [N, 2] of codes [N, D] on a plane, and the names of its two axes.

    D <= 2: the code itself (a 1-unit code on a line). Otherwise its first two principal
    components: the centred codes times the top two right singular vectors. A component's sign is
    arbitrary, so each is turned to give its largest loading a positive sign: the same codes give
    the same picture on every machine.
    """
    if means.dim() != 2 or len(means) < 2:
        raise ValueError(f"a map needs codes [N >= 2, D], got shape {list(means.shape)}")
    if means.shape[1] <= 2:
        points = means.float()
        if means.shape[1] == 1:
            return torch.cat([points, torch.zeros_like(points)], 1), ("z1", "")
        return points, ("z1", "z2")
    centred = means.double() - means.double().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:2]
    components = components * components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
    share = singular.pow(2) / singular.pow(2).sum().clamp_min(1e-300)
    first, second = (f"PC{i + 1} ({100 * float(share[i]):.0f}% of the variance)" for i in range(2))
    return (centred @ components.T).float(), (first, second)


def map_png(points: torch.Tensor, labels: torch.Tensor, axes: tuple[str, str], title: str) -> bytes:
    """The scatter of ``points`` coloured by ``labels`` as PNG bytes, ``MAP_PIXELS`` square."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(int(c) for c in labels.unique())
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo", len(classes))
    size = min(12.0, max(2.0, 2000 / len(points)))  # dots that a thousand points fill, and ten thousand do not bury
    fig, ax = plt.subplots(figsize=(MAP_PIXELS / DPI, MAP_PIXELS / DPI), dpi=DPI)
    try:
        xy = points.double().numpy()
        for i, c in enumerate(classes):
            mine = (labels == c).numpy()
            ax.scatter(xy[mine, 0], xy[mine, 1], s=size, alpha=0.7, color=palette(i), label=str(c), linewidths=0)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(title="class", fontsize="small", markerscale=3, loc="best", ncol=1 + len(classes) // 11)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def save_map(path: Path, means: torch.Tensor, labels: torch.Tensor, title: str, root: Path | None = None) -> torch.Tensor:
    """Project ``means`` (:func:`project`), draw them by class and write the PNG at ``path``
    through genctl's one writer; returns the points drawn."""
    points, axes = project(means)
    image = map_png(points, labels.cpu(), axes, title)
    atomic_write(path, lambda f: f.write(image), "the latent map", root)
    return points


def traversal(base: torch.Tensor, units: torch.Tensor, steps: int, span: float, scale: torch.Tensor) -> torch.Tensor:
    """Codes [len(units) * steps, D], row by row: row r is ``base`` [D] with unit ``units[r]``
    moved from -span to +span times ``scale`` of that unit in ``steps`` even steps; every other
    unit stays as in ``base``."""
    offsets = torch.linspace(-span, span, steps, dtype=base.dtype, device=base.device)
    z = base.repeat(len(units), steps, 1)
    for row, unit in enumerate(units.tolist()):
        z[row, :, unit] = base[unit] + offsets * scale[unit]
    return z.flatten(0, 1)


def traverse(
    model: GenerativeModel,
    x: torch.Tensor,
    labels: torch.Tensor,
    image: int,
    rows: int,
    steps: int,
    span: float,
    batch_size: int,
) -> torch.Tensor:
    """Images [rows * steps, C, H, W] of a traversal around the code of ``x[image]``: one row per
    unit, the ``rows`` most active over ``x`` first.

    The units' activity is measured on the posterior means of all of ``x`` (the top group's for
    a hierarchy, which lead its code). A unit moves in prior standard deviations (the prior is
    N(0, I)); an autoencoder has no prior, so its units move in their own spread over ``x``.
    """
    if not isinstance(model, Reconstructs):
        raise TypeError(f"{type(model).__name__} has no latent space to traverse")
    means, logvars = codes(model, x, batch_size, labels)
    activity = unit_activity(means)
    units = activity.argsort(descending=True)[: min(rows, len(activity))]
    log.info(
        "traversal of test image %d: units %s (activity %s)",
        image,
        ", ".join(map(str, units.tolist())),
        ", ".join(f"{float(activity[u]):.3g}" for u in units),
    )
    y = labels[image : image + 1].to(model.device) if is_conditional(model) else None
    base = model.code(x[image : image + 1].to(model.device), y)[0]
    scale = torch.ones_like(activity) if logvars is not None else activity.sqrt()
    z = traversal(base, units.to(base.device), steps, span, scale.to(base))
    return model.render(z, None if y is None else y.expand(len(z)))
