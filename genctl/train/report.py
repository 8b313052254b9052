"""The step of ``train()`` after the loop: best.pt's image grids, map of codes and test numbers, and
the run's metrics.json."""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from genctl.data import DataSplits
from genctl.errors import GenctlError
from genctl.eval.evaluate import EvalOptions
from genctl.eval.latent import codes
from genctl.eval.pictures import labelled, save_map
from genctl.eval.report import metrics_line
from genctl.eval.score import score
from genctl.images import save_grid
from genctl.models.base import Encodes, GenerativeModel
from genctl.runs.checkpoint import load_checkpoint, load_weights
from genctl.runs.folder import RunFolder
from genctl.runs.record import TEST, RunRecord
from genctl.train.hooks import ImageGrids, Training

if TYPE_CHECKING:
    from genctl.runs.progress import Progress

log = logging.getLogger("genctl")


class Report:
    """Reload best.pt, save its image grids, test it (``test`` None: not tested) and write metrics.json,
    keeping the evaluations genctl eval filed there (under their own names) while the run trained.
    What it measured goes to the hooks (test numbers, the map's codes) before they end."""

    def __init__(
        self,
        run_dir: Path,
        model_name: str,
        data: DataSplits,
        test_labels: torch.Tensor | None,
        grids: ImageGrids,
        device: torch.device,
        test: EvalOptions | None,
        latent_map: tuple[int, int],
    ) -> None:
        self.folder, self.model_name, self.data, self.test_labels = RunFolder(run_dir), model_name, data, test_labels
        self.grids, self.device, self.test = grids, device, test
        self.latent_map = latent_map  # (test images in the map, 0: no map; images per encoder pass)

    def run(self, trainer: Training, stop: str, train_means: dict[str, float]) -> None:
        """Report the run ``trainer`` trained (``stop``: why it ended; ``train_means``: the last epoch's losses)."""
        progress, model, data = trainer.progress, self.grids.model, self.data  # the scored model: the average with trainer.ema
        record = RunRecord(
            model=self.model_name,
            dataset=data.name,
            binarize=data.binarize,
            protocol=data.protocol,
            params=sum(p.numel() for p in model.parameters()),
            epochs=progress.epoch,
            steps=progress.step,
            stopped=stop,
            wall_time_s=round(progress.elapsed, 1),
            outside_steps_s=round(progress.outside, 2),
            outside_steps_share=round(progress.outside / max(progress.elapsed, 1e-9), 4),
            outside_marks_s=round(progress.marks, 2),
            cpu_time_s=round(progress.cpu_seconds, 1),
            train_images_per_s=round(progress.step * trainer.batches.batch_size / max(progress.elapsed, 1e-9), 1),
            peak_memory_mb=peak_memory_mb(self.device),
            precision=str(trainer.step.precision),
            best_epoch=progress.best_epoch,
            skipped_steps=progress.skipped,
            best_val_loss=progress.best_val,
            train_loss=train_means.get("loss"),
        )
        best = self.folder.best
        log.info(
            "outside the optimizer steps (validation, checkpoints, image grids, logs): %.1fs, %.1f%% of %.0fs of training%s",
            progress.outside,
            100 * record.outside_steps_share,
            progress.elapsed,
            f" ({progress.marks:.1f}s of it keeping best.pt at trainer.keep_best_at's marks)" if progress.marks else "",
        )
        record.error = failure(progress, best)
        if record.error:
            self.write(record)
            raise GenctlError(record.error)
        load_weights(model, load_checkpoint(best, map_location=self.device), best, averaged=True)
        grids, record.samples_per_s = self.grids.draw()
        record.images = [str(save_grid(grid, self.folder.grid(name))) for name, grid in grids.items()]
        test_codes = self.test_codes(model)
        record.images += self.draw_map(trainer, test_codes)
        if self.test is not None:
            about = f"{data.protocol}; test split, checkpoint best.pt"
            x = data.fixed("test").to(self.device)
            record.evaluations[TEST] = score(model, x, self.test, about, self.test_labels, test_codes, progress=True)
            trainer.emit("on_scalars", "test", record.evaluations[TEST].scalars())
            log.info("test (best.pt): %s", metrics_line(record.evaluations[TEST].metrics))
        self.write(record)

    def test_codes(self, model: GenerativeModel) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The test split's posterior means and log-variances, encoded once for both the map and the
        test's latent summary; None where neither wants them or the model has no latent space."""
        images, batch_size = self.latent_map
        if not isinstance(model, Encodes) or (self.test is None and not images):
            return None
        return codes(model, self.data.fixed("test"), batch_size, self.test_labels)

    def draw_map(self, trainer: Training, test_codes: tuple[torch.Tensor, torch.Tensor | None] | None) -> list[str]:
        """latent_map.png: the codes of the first test images by class (:mod:`genctl.eval.pictures`),
        which go to the other hooks too (TensorBoard's projector); nothing for a model without a
        latent space or data without classes. Returns the file written, if any."""
        images = self.latent_map[0]
        labels = self.data.labels["test"][:images]
        if not images or test_codes is None:
            return []
        if not labelled(labels):
            log.info("no latent map: dataset '%s' has no class labels to colour the codes by", self.data.name)
            return []
        x = self.data.fixed("test")[:images]
        means = test_codes[0][:images]
        path = self.folder.grid("latent_map")
        save_map(path, means, labels, f"test codes of {self.model_name}, best.pt (step {trainer.progress.step})")
        trainer.emit("on_codes", means, labels, x)
        return [str(path)]

    def write(self, record: RunRecord) -> None:
        """Write ``record`` as metrics.json, with the evaluations genctl eval filed meanwhile."""
        earlier = self.earlier_record()
        record.evaluations.update({name: e for name, e in earlier.evaluations.items() if name != TEST})
        record.extra = earlier.extra
        record.write(self.folder.path)

    def earlier_record(self) -> RunRecord:
        """What the run folder's record holds now, read as late as possible so that an evaluation
        genctl eval wrote during training is kept; an unreadable one is replaced, with a warning."""
        try:
            return RunRecord.read(self.folder.path, missing_ok=True)
        except GenctlError as e:
            log.warning("replacing an unreadable record: %s", e)
            return RunRecord()


def failure(progress: Progress, best: Path) -> str | None:
    """Why a run that reached its end trained nothing worth testing (None: it did): every step
    skipped as non-finite (trainer.skip_nonfinite), or no finite validation loss, hence no best.pt."""
    if progress.step and progress.skipped == progress.step:
        what = f"all {progress.step} steps had a non-finite loss and were skipped, so nothing was trained"
    elif not best.is_file():
        what = f"no validation loss was finite, so there is no best.pt ({progress.skipped} of {progress.step} steps skipped)"
    else:
        return None
    return f"the run failed: {what}; lower optim.lr or set trainer.grad_clip"


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
