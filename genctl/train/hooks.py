"""What training shows and writes on the side: the progress bar, TensorBoard scalars and image
grids, history.jsonl and the per-epoch log line (the experiment trackers: ``genctl.train.trackers``).

Hooks are attached on rank 0 only (``genctl.train.build``), so the loop calls them at fixed
points without asking which rank it is on. Every event of :class:`Hook` does nothing; a hook
overrides the ones it needs, as pythae's callbacks do.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm.auto import tqdm

from genctl.data import Batches
from genctl.eval.evaluate import evaluating
from genctl.eval.latent import collapse_warning, latent_metrics
from genctl.images import make_grid
from genctl.models.base import GenerativeModel, Reconstructs, Sampler
from genctl.runs.atomic import append_text, refuse_links
from genctl.runs.progress import Progress
from genctl.train.cadence import Schedule
from genctl.train.step import TrainStep

if TYPE_CHECKING:
    from genctl.train.validation import Validation

log = logging.getLogger("genctl")

EMBEDDING = "latent_codes"  # the projector's name for the codes of the latent map


class Training(Protocol):
    """What a hook reads of the run it watches (:class:`genctl.train.loop.Trainer`)."""

    progress: Progress
    batches: Batches
    schedule: Schedule
    step: TrainStep
    images_per_s: float  # of the latest window of steps

    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every hook."""


class Hook:
    def on_train_begin(self, trainer: Training) -> None:
        """After resuming, before the first step."""

    def on_epoch_begin(self, trainer: Training) -> None:
        """Before the epoch's first batch, or the next batch of an epoch that paused (for an event
        counted in steps or seconds) or was resumed."""

    def on_step(self, trainer: Training) -> None:
        """After every step, applied or skipped."""

    def on_scalars(self, trainer: Training, split: str, values: dict[str, float]) -> None:
        """Numbers at the current step: ``train`` (window means, lr, images/s), ``val``, ``test``."""

    def on_epoch_end(self, trainer: Training) -> None:
        """After the epoch's last batch, or the step a stop condition or an event due in steps or
        seconds paused it on."""

    def on_validation(self, trainer: Training, train_means: dict[str, float], val: dict[str, float], improved: bool) -> None:
        """After a validation (``val`` is empty without a validation split); ``improved``: best.pt was written."""

    def on_images(self, trainer: Training) -> None:
        """When the image grids are due (``trainer.sample_every``)."""

    def on_codes(self, trainer: Training, means: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> None:
        """At the end, best.pt's codes [N, D] of the test images [N, C, H, W] of the latent map,
        with their classes [N] (``trainer.latent_map``; latent models on labelled data only)."""

    def on_train_end(self, trainer: Training, stop: str, train_means: dict[str, float]) -> None:
        """After the last step, the last validation and checkpoint, and the report (best.pt tested, metrics.json
        written); ``stop``: why training ended."""

    def on_failure(self, trainer: Training, error: BaseException) -> None:
        """Training ended with ``error`` (a Ctrl-C or signal, a non-finite loss, a bug) instead of
        ``on_train_end``, or in it; the error goes on to the caller after every hook has seen it."""


@dataclass(frozen=True)
class ImageGrids:
    """What a person looks at: samples (where the model is a :class:`Sampler`; a conditional
    model's classes in turn) and reconstructions of the first ``num_reconstructions`` validation
    images, originals above (where it :class:`Reconstructs`; ``val_labels`` go with them to a
    conditional model, None to another)."""

    model: GenerativeModel
    val_x: torch.Tensor
    val_labels: torch.Tensor | None
    num_samples: int
    num_reconstructions: int
    seed: int
    drawn: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def at_step(self, step: int) -> dict[str, torch.Tensor]:
        """The grids of training step ``step``, drawn once for all the hooks that show them
        (TensorBoard and the trackers): sampling an autoregressive model is slow."""
        if step not in self.drawn:
            self.drawn.clear()
            self.drawn[step] = self.draw()[0]
        return self.drawn[step]

    def draw(self) -> tuple[dict[str, torch.Tensor], float | None]:
        """The grids by name, and samples per second (None for a model that does not sample)."""
        grids, rate = {}, None
        with evaluating(self.model, self.seed):
            if isinstance(self.model, Sampler) and self.num_samples:  # trainer.num_samples=0: no sample grid
                start = time.perf_counter()
                grids["samples"] = self.model.sample(self.num_samples)
                rate = self.num_samples / max(time.perf_counter() - start, 1e-9)
            if isinstance(self.model, Reconstructs) and len(self.val_x):
                x = self.val_x[: self.num_reconstructions]
                y = None if self.val_labels is None else self.val_labels[: self.num_reconstructions]
                grids["reconstructions"] = torch.cat([x, self.model.reconstruct(x, y)])
        return grids, rate


class ProgressBar(Hook):
    """One tqdm bar per epoch, with the latest window's mean loss."""

    def on_epoch_begin(self, trainer: Training) -> None:
        batches = trainer.batches
        self.bar = tqdm(
            total=len(batches),
            initial=batches.position // batches.batch_size,
            desc=f"epoch {trainer.progress.epoch + 1}/{trainer.schedule.epochs}",
            dynamic_ncols=True,
            leave=False,
        )

    def on_step(self, trainer: Training) -> None:
        self.bar.update()

    def on_scalars(self, trainer: Training, split: str, values: dict[str, float]) -> None:
        if split == "train":
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)

    def on_epoch_end(self, trainer: Training) -> None:
        self.bar.close()


class TensorBoard(Hook):
    """Scalars as ``<split>/<name>`` at the training step, the image grids when due, and the
    latent map's codes for the embedding projector, with their classes and the images as thumbnails."""

    def __init__(self, folder: Path, grids: ImageGrids) -> None:
        self.folder, self.grids = folder, grids

    def on_train_begin(self, trainer: Training) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when training

        refuse_links(self.folder)  # its event files get new names; the folder itself must not lead elsewhere
        # a resumed run drops what its earlier life logged after the checkpoint it continues from
        self.writer = SummaryWriter(str(self.folder), purge_step=trainer.progress.step or None)

    def on_scalars(self, trainer: Training, split: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{split}/{name}", value, trainer.progress.step)

    def on_images(self, trainer: Training) -> None:
        for name, grid in self.grids.at_step(trainer.progress.step).items():
            self.writer.add_image(name, make_grid(grid), trainer.progress.step)

    def on_codes(self, trainer: Training, means: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> None:
        step = trainer.progress.step
        # the projector's files are written by tensorboard, which follows links: none may be on their way
        written = [f"{step:05d}/{EMBEDDING}/{name}" for name in ("tensors.tsv", "metadata.tsv", "sprite.png")]
        for name in [*written, "projector_config.pbtxt"]:
            refuse_links(self.folder / name, self.folder)
        with contextlib.redirect_stdout(io.StringIO()):  # its print when a resumed run's last step had one
            self.writer.add_embedding(means, [int(c) for c in labels], images.float(), step, EMBEDDING)

    def on_train_end(self, trainer: Training, stop: str, train_means: dict[str, float]) -> None:
        self.writer.close()


class History(Hook):
    """One JSON line per validation: the curves ``genctl compare`` draws. Appended without following
    a link planted at the file (:func:`genctl.runs.atomic.append_text`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation(self, trainer: Training, train_means: dict[str, float], val: dict[str, float], improved: bool) -> None:
        progress = trainer.progress
        record = {
            "epoch": progress.epoch,
            "step": progress.step,
            "elapsed_s": round(progress.elapsed, 2),
            "train_loss": train_means.get("loss"),
            "val_loss": val.get("loss"),
        }
        append_text(self.path, json.dumps(record) + "\n", "the history")


class EpochLog(Hook):
    """The log line of each validation: losses, whether best.pt improved, speed and time."""

    def on_validation(self, trainer: Training, train_means: dict[str, float], val: dict[str, float], improved: bool) -> None:
        progress = trainer.progress
        log.info(
            "epoch %d/%d step %d  train loss %.4f  val loss %s%s  %.0f img/s  %.0fs",
            progress.epoch,
            trainer.schedule.epochs,
            progress.step,
            train_means.get("loss", math.nan),
            f"{val['loss']:.4f}" if val else "n/a",
            "  (best)" if improved else "",
            trainer.images_per_s,
            progress.elapsed,
        )


class LatentUnits(Hook):
    """A warning line when training ends with most latent units inactive on the validation split
    (:func:`genctl.eval.latent.collapse_warning`): posterior collapse leaves the loss looking
    fine. One encoder pass over the split, after the last step, of the model the report tested
    (attach it after the report); a model without a latent space is left alone."""

    def __init__(self, val: Validation) -> None:
        self.val = val

    def on_train_end(self, trainer: Training, stop: str, train_means: dict[str, float]) -> None:
        if len(self.val.x) < 2:
            return
        found = latent_metrics(self.val.model, self.val.x, self.val.batch_size, self.val.labels)
        warning = collapse_warning(found, "the validation split") if found else None
        if warning:
            log.warning("warning: %s", warning)
