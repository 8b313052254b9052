"""The training loop every model family shares: epochs of :class:`~genctl.train.step.TrainStep`,
validation choosing best.pt, last.pt and image grids on their cadences, and the stops
(max_steps, max_time, SIGINT/SIGTERM).

The :class:`Trainer` takes built objects (``genctl.train.build`` makes them from the config) and
knows models only through ``genctl.models.base.GenerativeModel`` and losses through
``genctl.losses.Loss``: it never asks which model it is training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genctl import distributed
from genctl.data import Batches
from genctl.losses import Loss
from genctl.models import GenerativeModel
from genctl.runs.checkpoint import copy_checkpoint, load_checkpoint, load_weights, save_checkpoint
from genctl.runs.folder import RunFolder
from genctl.runs.progress import Progress
from genctl.train.cadence import Events, Schedule
from genctl.train.hooks import Hook
from genctl.train.optim import LRSchedule
from genctl.train.signals import Interrupted, stop_on_signals
from genctl.train.state import Stopwatch, capture, changed_settings, restore
from genctl.train.step import LossWindow, TrainStep, nonfinite_error
from genctl.train.validation import Validation, mean_loss

log = logging.getLogger("genctl")


class Trainer:
    """One training run over built objects; :meth:`fit` runs it. ``meta`` is what every checkpoint
    carries besides training state (the resolved config and the data's shape: enough to rebuild
    the model); ``hooks`` show and write what happens (rank 0 only)."""

    STOPS = (None, "max_steps", "max_time", "interrupted")

    def __init__(
        self,
        model: GenerativeModel,
        loss_fn: Loss,
        step: TrainStep,
        batches: Batches,
        lr: LRSchedule,
        val: Validation,
        schedule: Schedule,
        run_dir: Path,
        meta: dict[str, Any],
        hooks: list[Hook],
    ) -> None:
        self.model, self.loss_fn, self.step, self.batches, self.lr = model, loss_fn, step, batches, lr
        self.val, self.schedule, self.folder, self.meta, self.hooks = val, schedule, RunFolder(run_dir), meta, hooks
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.progress = Progress()
        self.images_per_s = math.nan

    def emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, resuming=True)
        load_weights(self.model, state, path)
        self.progress = restore(state, self.step, self.batches, path)
        changed = changed_settings(state.get("config") or {}, self.meta["config"])
        log.info(
            "resumed from %s at epoch %d, step %d%s",
            path,
            self.progress.epoch,
            self.progress.step,
            f"; from here on: {', '.join(changed)}" if changed else "",
        )

    def save(self, path: Path) -> None:
        """Write the checkpoint ``path`` of the run folder (rank 0; every rank must call it)."""
        state = capture(self.model, self.step, self.lr, self.batches, self.progress)
        if self.rank == 0:
            save_checkpoint(path, {**state, **self.meta})

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Count the time of what is not an optimizer step (validation, checkpoints, image grids,
        logs): what the cadences cost, reported beside the run's time."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.progress.outside += time.monotonic() - start

    def spent(self) -> float:
        """Seconds of the time budget used, on the clock it is counted by (trainer.clock)."""
        return self.progress.cpu_seconds if self.schedule.clock == "cpu" else self.progress.elapsed

    def set_lr(self) -> None:
        done = self.progress.step / (self.schedule.epochs * len(self.batches))
        if self.schedule.max_seconds:
            done = max(done, self.spent() / self.schedule.max_seconds)
        self.lr.apply(self.step.optimizer, self.progress.step, done)

    def stop_reason(self, signals: list[str]) -> str | None:
        """Why to stop after this step; with several processes, the strongest reason any has."""
        reason = None
        if signals:
            reason = "interrupted"
        elif self.schedule.max_steps is not None and self.progress.step >= self.schedule.max_steps:
            reason = "max_steps"
        elif self.schedule.max_seconds is not None and self.spent() >= self.schedule.max_seconds:
            reason = "max_time"
        return self.STOPS[distributed.largest_on_any_rank(self.STOPS.index(reason))]

    def due(self, epoch_done: bool) -> list[str]:
        """The events whose cadence falls now; every rank takes them together (steps and epochs
        agree across ranks; a cadence by a clock falls when it falls on any rank)."""
        p = self.progress
        due = self.events.due(p.epoch, p.step, self.spent(), p.elapsed, p.outside, epoch_done, self.images_per_s)
        if self.events.clock_bound(epoch_done):
            due = distributed.any_flags(due)
        return [name for name, is_due in zip(Events.NAMES, due) if is_due]

    def run_event(self, name: str, train_means: dict[str, float], validated: bool) -> None:
        """Validate, save last.pt, draw the image grids or keep best.pt at a mark (validating first
        unless the cadence ``validated`` just now), timing it for the cadences by share. What a mark
        costs is also counted apart: it is the benchmark's instrument, not the recipe's cadence."""
        start = time.monotonic()
        if name == "val" or (name == "mark" and not validated):
            self.validate(train_means)  # a mark keeps the best weights up to it
        elif name == "ckpt":
            self.save(self.folder.last)
        elif name == "sample":
            self.emit("on_images")
        if name == "mark":
            for minutes in self.events.passed_marks(self.spent()):  # best.pt as it stands at each mark passed
                if self.rank == 0 and self.folder.best.is_file():
                    copy_checkpoint(self.folder.best, self.folder.kept(minutes))
        self.events.cost[name] = time.monotonic() - start
        if name == "mark":
            self.progress.marks += self.events.cost[name]

    def run_epoch(self, signals: list[str]) -> tuple[str | None, dict[str, float]]:
        """Train until the epoch ends, an event counted in steps or seconds falls due, or a stop
        condition holds; (stop reason, mean train losses of these steps)."""
        progress, batches = self.progress, self.batches
        window, stop = LossWindow(), None
        epoch: dict[str, float] = {}  # the windows' mean losses times their steps
        epoch_steps = 0
        self.emit("on_epoch_begin")
        try:  # an error mid-epoch closes the epoch's progress bar before it is reported
            for x, y in batches:
                self.set_lr()
                out = self.step(x, y, progress)
                if out is None:
                    log.warning(
                        "step %d (%s): non-finite loss, step skipped (trainer.skip_nonfinite=true)",
                        progress.step,
                        self.batch_position(0),
                    )
                window.add(out, len(x))
                self.watch.update(progress)
                stop = self.stop_reason(signals)
                pause = stop is None and bool(self.due(epoch_done=False))
                with self.aside():
                    self.emit("on_step")
                    ends = window.steps == self.schedule.log_every or batches.position >= len(batches.images) or stop or pause
                    if window.steps and ends:
                        for name, value in self.log_window(window).items():
                            epoch[name] = epoch.get(name, 0.0) + value * window.steps
                        epoch_steps += window.steps
                        window = LossWindow()
                if stop or pause:
                    break
        finally:
            self.emit("on_epoch_end")
        return stop, {name: value / max(epoch_steps, 1) for name, value in epoch.items()}

    def log_window(self, window: LossWindow) -> dict[str, float]:
        """Publish the window's mean losses (read from the device once, summed over the ranks);
        stop on a non-finite one."""
        totals = distributed.sum_tensors(list(window.sums.values()))
        means = {name: float(total) / (window.steps * self.world) for name, total in zip(window.sums, totals)}
        if not math.isfinite(means["loss"]):
            back = window.steps_since_nonfinite()
            raise nonfinite_error(self.progress.step - back, self.batch_position(back), means, self.folder.last)
        self.images_per_s = window.images * self.world / max(time.monotonic() - window.start, 1e-9)
        lr = self.step.optimizer.param_groups[0]["lr"]
        self.emit("on_scalars", "train", {**means, "lr": lr, "images_per_s": self.images_per_s})
        return means

    def batch_position(self, back: int) -> str:
        """Epoch and batch of the step ``back`` steps before the one just taken."""
        batch = -(-self.batches.position // self.batches.batch_size) - back
        return f"epoch {self.progress.epoch + 1}, batch {batch} of {len(self.batches)}"

    def validate(self, train_means: dict[str, float]) -> None:
        """Validation loss (the train loss where there is no validation split) picks best.pt."""
        if len(self.val.x):
            val = mean_loss(self.loss_fn, self.val, shard=(self.rank, self.world))
            self.emit("on_scalars", "val", val)
            criterion = val["loss"]
        else:
            val, criterion = {}, train_means.get("loss", math.inf)
        improved = criterion < self.progress.best_val
        if improved:
            self.progress.best_val, self.progress.best_epoch = criterion, self.progress.epoch
            self.save(self.folder.best)
        self.emit("on_validation", train_means, val, improved)

    def fit(self) -> tuple[str, dict[str, float]]:
        """Train until the last epoch or a stop; validate, save and draw images as scheduled. Why it
        ended (completed, max_steps, max_time) and the mean train losses of its last epoch."""
        progress, schedule = self.progress, self.schedule
        self.watch = Stopwatch(progress)
        self.events = Events(schedule, self.spent(), len(self.val.x))
        self.emit("on_train_begin")
        # a resumed run whose budget is already spent only finishes: it tests best.pt, no extra step
        stop, train_means = (self.stop_reason([]) if progress.step else None), {}
        with stop_on_signals() as signals:
            while progress.epoch < schedule.epochs and stop is None:
                stop, train_means = self.run_epoch(signals)
                epoch_done = self.batches.order is None
                if epoch_done:
                    progress.epoch += 1
                if stop == "interrupted":
                    self.save(self.folder.last)
                    raise Interrupted(
                        f"stopped by {signals[0]} at step {progress.step}; resumable checkpoint "
                        f"{self.folder.last}; continue with: genctl train resume={self.folder.path}"
                    )
                finishing = stop is not None or progress.epoch >= schedule.epochs
                due = Events.NAMES if finishing else self.due(epoch_done)
                with self.aside():
                    for name in due:
                        self.run_event(name, train_means, validated="val" in due)
                self.watch.update(progress)  # the run's time includes what the events took
                self.events.happened(due, self.spent())
        if stop:
            log.info("stopped early (%s) after %d steps, %.0fs", stop, progress.step, progress.elapsed)
        return stop or "completed", train_means
