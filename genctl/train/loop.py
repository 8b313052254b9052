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
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genctl import distributed
from genctl.data import Batches
from genctl.errors import GenctlError
from genctl.losses import Loss
from genctl.models import GenerativeModel
from genctl.runs.checkpoint import copy_checkpoint, load_checkpoint, load_weights, save_checkpoint
from genctl.train.cadence import Every
from genctl.train.hooks import Hook
from genctl.train.optim import LRSchedule
from genctl.train.state import Progress, Stopwatch, capture, changed_settings, restore
from genctl.train.step import TrainStep
from genctl.train.validation import Validation, mean_loss

log = logging.getLogger("genctl")


class Interrupted(GenctlError):
    """Training stopped by a signal after writing a resumable checkpoint."""

    exit_code = 130


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """SIGINT/SIGTERM set a flag (read after each step) instead of killing the process mid-write."""
    received: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class LossWindow:
    """The steps since the last log line: losses summed where they were computed (on the device,
    read once per ``trainer.log_every`` steps: one sync), and each step's loss to name the one that
    went non-finite."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: list[torch.Tensor] = field(default_factory=list)
    steps: int = 0  # steps applied (a skipped one adds images, not losses)
    images: int = 0
    start: float = field(default_factory=time.monotonic)

    def add(self, out: dict[str, torch.Tensor] | None, images: int) -> None:
        """One step's losses (None: skipped) and batch size."""
        self.images += images
        if out is None:
            return
        for name, value in out.items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.losses.append(out["loss"])
        self.steps += 1


@dataclass(frozen=True)
class Schedule:
    """When the loop logs (steps), validates, saves last.pt and draws images (each on its own
    cadence), and stops."""

    epochs: int
    log_every: int
    val_every: Every
    ckpt_every: Every
    sample_every: Every
    max_steps: int | None
    max_seconds: float | None
    clock: str  # what max_seconds counts: "wall" or "cpu" (trainer.clock)
    marks: tuple[float, ...] = ()  # seconds on that clock where best.pt is kept as best@<minutes>min.pt


class Trainer:
    """One training run over built objects; :meth:`fit` runs it. ``meta`` is what every checkpoint
    carries besides training state (the resolved config and the data's shape: enough to rebuild
    the model); ``hooks`` show and write what happens (rank 0 only)."""

    STOPS = (None, "max_steps", "max_time", "interrupted")
    EVENTS = ("val", "ckpt", "sample", "mark")  # in the order they happen when due together

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
        self.val, self.schedule, self.run_dir, self.meta, self.hooks = val, schedule, run_dir, meta, hooks
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.progress = Progress()
        self.images_per_s = math.nan

    def emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, resuming=True)
        load_weights(self.model, state, path)
        try:
            self.progress = restore(state, self.step, self.batches)
        except (RuntimeError, ValueError) as e:  # torch's, numpy's and random's own checks of what they restore
            what = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise GenctlError(
                f"checkpoint {path} cannot be resumed: its training state does not fit this run ({what}); "
                "resume from a checkpoint genctl train wrote for this model"
            ) from e
        changed = changed_settings(state.get("config") or {}, self.meta["config"])
        log.info(
            "resumed from %s at epoch %d, step %d%s",
            path,
            self.progress.epoch,
            self.progress.step,
            f"; from here on: {', '.join(changed)}" if changed else "",
        )

    def save(self, name: str) -> None:
        """Write ``name`` in the run folder (rank 0; every rank must call it)."""
        state = capture(self.model, self.step, self.lr, self.batches, self.progress)
        if self.rank == 0:
            save_checkpoint(self.run_dir / name, {**state, **self.meta})

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
        return self.STOPS[distributed.max_code(self.STOPS.index(reason))]

    def due(self, epoch_done: bool) -> list[str]:
        """The events whose cadence falls now; every rank takes them together (steps and epochs
        agree across ranks; a cadence by a clock falls when it falls on any rank). An event that
        falls adds its last cost to the time outside the steps the next one is judged by."""
        progress, now = self.progress, self.spent()
        cadences = (self.schedule.val_every, self.schedule.ckpt_every, self.schedule.sample_every)
        outside, due = progress.outside, []
        for name, every in zip(self.EVENTS, cadences):
            cost = self.event_cost[name]
            share = (outside + cost) / max(progress.elapsed + cost, 1e-9)
            due.append(every.due(progress.epoch, progress.step, now - self.last_event[name], epoch_done, share))
            outside += cost if due[-1] else 0.0
        due.append(self.mark_reached())
        due[0] = due[0] or due[-1]  # a mark keeps the best weights validated up to it
        if self.marks or any(e.unit == "seconds" or (e.timed and epoch_done) for e in cadences):
            due = distributed.any_flags(due)
        return [name for name, is_due in zip(self.EVENTS, due) if is_due]

    def mark_reached(self) -> bool:
        return bool(self.marks) and self.spent() >= self.marks[0]

    def run_event(self, name: str, train_means: dict[str, float]) -> None:
        """Validate, save last.pt, draw the image grids or keep best.pt at a mark, timing it for the
        cadences by share."""
        start = time.monotonic()
        if name == "val":
            self.validate(train_means)
        elif name == "ckpt":
            self.save("last.pt")
        elif name == "sample":
            self.emit("on_images")
        while self.mark_reached():  # the best-so-far checkpoint as it stands at each mark passed
            minutes = self.marks.pop(0) / 60
            best = self.run_dir / "best.pt"
            if self.rank == 0 and best.is_file():
                copy_checkpoint(best, self.run_dir / f"best@{minutes:g}min.pt")
        self.event_cost[name] = time.monotonic() - start

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
                    where = self.where(0)
                    log.warning("step %d (%s): non-finite loss, step skipped (trainer.skip_nonfinite=true)", progress.step, where)
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
            self.non_finite(window.losses, means)
        self.images_per_s = window.images * self.world / max(time.monotonic() - window.start, 1e-9)
        lr = self.step.optimizer.param_groups[0]["lr"]
        self.emit("on_scalars", "train", {**means, "lr": lr, "images_per_s": self.images_per_s})
        return means

    def where(self, back: int) -> str:
        """Epoch and batch of the step ``back`` steps before the one just taken."""
        batch = -(-self.batches.position // self.batches.batch_size) - back
        return f"epoch {self.progress.epoch + 1}, batch {batch} of {len(self.batches)}"

    def non_finite(self, losses: list[torch.Tensor], means: dict[str, float]) -> None:
        """Stop on the first non-finite loss of the window, naming its step and batch; the
        checkpoints on disk predate it and are left alone."""
        values = torch.stack(losses).float().cpu()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        back = len(losses) - 1 - int(bad[0]) if len(bad) else 0  # another rank's loss when none is local
        last = self.run_dir / "last.pt"
        kept = (
            f"the last good checkpoint is {last} (step {load_checkpoint(last)['progress']['step']})"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise GenctlError(
            f"non-finite loss at step {self.progress.step - back} ({self.where(back)}; window means "
            f"{', '.join(f'{k}={v:.4g}' for k, v in means.items())}); {kept}: lower optim.lr, set "
            "trainer.grad_clip, or trainer.skip_nonfinite=true to skip such steps"
        )

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
            self.save("best.pt")
        self.emit("on_validation", train_means, val, improved)

    def fit(self) -> Progress:
        """Train until the last epoch or a stop; validate, save and draw images as scheduled."""
        progress, schedule = self.progress, self.schedule
        self.watch = Stopwatch(progress)
        self.last_event = dict.fromkeys(self.EVENTS, self.spent())  # when each event last happened, on the budget's clock
        self.event_cost = dict.fromkeys(self.EVENTS, 0.0)  # wall seconds each took last time
        self.marks = [m for m in schedule.marks if m > self.spent()]  # trainer.keep_best_at still ahead
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
                    self.save("last.pt")
                    raise Interrupted(
                        f"stopped by {signals[0]} at step {progress.step}; resumable checkpoint "
                        f"{self.run_dir / 'last.pt'}; continue with: genctl train resume={self.run_dir}"
                    )
                finishing = stop is not None or progress.epoch >= schedule.epochs
                due = self.EVENTS if finishing else self.due(epoch_done)
                with self.aside():
                    for name in due:
                        self.run_event(name, train_means)
                self.watch.update(progress)  # the run's time includes what the events took
                self.last_event.update(dict.fromkeys(due, self.spent()))
        if stop:
            log.info("stopped early (%s) after %d steps, %.0fs", stop, progress.step, progress.elapsed)
        self.emit("on_train_end", stop or "completed", train_means)
        return progress
