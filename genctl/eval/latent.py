"""What a latent model's codes carry: the codes themselves, active units, KL per unit, a linear probe.

- Active units (Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
  section 5.2): unit u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, i.e. when its posterior
  mean moves with the image. A collapsed unit's posterior is the prior for every x, so its mean is
  constant and it tells the decoder nothing: the count is how many units the model really uses,
  the standard check for posterior collapse reported beside every NLL.
- KL per unit: the mean over images of KL(q(z_u|x) || N(0, 1)), the nats each unit spends; a
  collapsed unit spends none.
- Linear probe: a multinomial logistic regression from standardized posterior means to the class
  labels, trained on the training split and scored on another: how linearly readable the classes
  are from the codes, the usual measure of a representation's usefulness.

Every function takes the codes (:func:`codes`), so the encoder runs once per image whatever is
measured; a model only has to declare :class:`~genctl.models.base.Encodes`.
"""

from __future__ import annotations

from typing import Any

import torch

from genctl.data.loader import Batches
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluating
from genctl.models.base import Encodes, GenerativeModel, is_conditional
from genctl.nn.gaussian import kl_normal

#: Burda et al.'s threshold on A_u: above it a unit counts as active
ACTIVE_THRESHOLD = 0.01


def check_encodes(model: GenerativeModel, name: str, what: str) -> Encodes:
    """``model`` if it has a latent space to read codes from, else a one-line refusal naming ``what``
    could not be done (autoregressive models have none)."""
    if not isinstance(model, Encodes):
        raise GenctlError(
            f"model '{name}' has no latent space (it models pixels directly), so {what} cannot be computed; "
            "use a latent model (vae, hvae, ae)"
        )
    return model


def codes(
    model: GenerativeModel, x: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every image's posterior mean [N, D] and log-variance [N, D] (the top group's for a
    hierarchy; None for a deterministic encoder), in eval mode without autograd, ``batch_size``
    images at a time, on the CPU. ``labels`` go with the images to a class-conditional encoder.

    Eval mode because BatchNorm must use its running statistics: a code must not depend on which
    images share its batch."""
    encoder = check_encodes(model, type(model).__name__, "codes")
    means: list[torch.Tensor] = []
    logvars: list[torch.Tensor] = []
    with evaluating(model, seed=0):  # the encoder draws nothing: the seed only keeps the caller's streams untouched
        for batch, y in Batches(x, batch_size, labels=labels if is_conditional(model) else None):
            batch = batch.to(model.device)  # labels only where there are some: an encoder without classes may take x alone
            mean, logvar = encoder.encode(batch) if y is None else encoder.encode(batch, y.to(model.device))
            means.append(mean.flatten(1).float().cpu())
            if logvar is not None:
                logvars.append(logvar.flatten(1).float().cpu())
    return torch.cat(means), (torch.cat(logvars) if logvars else None)


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """A_u = Cov_x(E_q[z_u | x]) per unit [D]: the variance over images of each unit's posterior
    mean (population variance, in float64 so 60,000 codes lose nothing; 0 for one image)."""
    if means.dim() != 2 or len(means) < 1:
        raise ValueError(f"unit activity needs codes [N >= 1, D], got shape {list(means.shape)}")
    return means.double().var(0, correction=0).to(means.dtype)


def active_units(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """How many units have an activity :func:`unit_activity` above ``threshold``."""
    return int((unit_activity(means) > threshold).sum())


def kl_per_unit(means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """Mean over images of KL(q(z_u | x) || N(0, 1)) per unit [D], in nats: what each unit costs
    in the ELBO (the prior of a flat latent and of a hierarchy's top group is N(0, I))."""
    return kl_normal(means.double(), logvars.double(), 0.0, 0.0).mean(0).to(means.dtype)


def latent_summary(means: torch.Tensor, logvars: torch.Tensor | None) -> dict[str, Any]:
    """What ``genctl eval`` files about a model's codes: ``active_units`` of ``latent_units``, and
    for a stochastic encoder the KL per unit (``kl_per_unit``, a list in unit order) and its sum
    ``kl_latent`` (the whole KL of a flat latent; the top group's of a hierarchy)."""
    out: dict[str, Any] = {"active_units": active_units(means), "latent_units": int(means.shape[1])}
    if logvars is not None:
        kl = kl_per_unit(means, logvars)
        out.update(kl_latent=float(kl.sum()), kl_per_unit=[round(float(v), 6) for v in kl])
    return out


def latent_metrics(
    model: GenerativeModel, x: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None
) -> dict[str, Any]:
    """:func:`latent_summary` of the codes of ``x``, as the likelihood's evaluation files it (genctl eval,
    the end-of-training test, ``genctl.nll``); nothing for a model without a latent space."""
    return latent_summary(*codes(model, x, batch_size, labels)) if isinstance(model, Encodes) else {}


def collapse_warning(found: dict[str, Any], where: str) -> str | None:
    """A line saying that most latent units are inactive in :func:`latent_summary` ``found`` (measured on
    ``where``), or None: a model that ignores most of its latent space (posterior collapse, for a
    VAE) still reaches a fair ELBO, so nothing else would say it."""
    active, units = found["active_units"], found["latent_units"]
    if 2 * active >= units:
        return None
    return (
        f"only {active} of {units} latent units are active on {where} (the variance of their posterior mean over images "
        f"is above {ACTIVE_THRESHOLD}, Burda et al. 2016): the rest carry nothing about the image; "
        "a VAE whose units collapsed onto the prior may need KL warm-up (loss.kl_warmup_steps) or a smaller model.latent_dim"
    )


def check_labelled(labels: torch.Tensor | None, dataset: str) -> torch.Tensor:
    """``labels`` if they hold at least two classes, else a one-line refusal: a probe of a dataset
    without labels (an image folder without class sub-folders: every image is class 0) measures nothing."""
    if labels is None or len(labels) == 0 or int(labels.min()) == int(labels.max()):
        raise GenctlError(
            f"dataset '{dataset}' has no class labels (at most one class), so the linear probe cannot be scored; "
            "use a labelled dataset (mnist, fashion_mnist, cifar10, or an image folder with one sub-folder per class)"
        )
    return labels


def probe(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    steps: int,
    seed: int,
) -> float:
    """Accuracy on ``test_codes`` of a multinomial logistic regression fit to ``train_codes``.

    Codes are standardized with the training codes' mean and standard deviation (units of a VAE
    differ in scale by orders of magnitude; a collapsed unit's near-zero spread is floored), then
    full-batch L-BFGS runs at most ``steps`` iterations from small weights drawn with ``seed``:
    repeatable, and seconds for 60,000 codes of 32 units on two cores (no minibatch noise to tune).
    """
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    mean = train_codes.double().mean(0)
    std = train_codes.double().std(0, correction=0).clamp_min(1e-6)
    a = ((train_codes.double() - mean) / std).float()
    b = ((test_codes.double() - mean) / std).float()
    y = train_labels.long()
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(a.shape[1], classes, generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(a @ weight + bias, y)
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    with torch.no_grad():
        return float(((b @ weight + bias).argmax(1) == test_labels.long()).float().mean())
