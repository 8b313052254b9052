"""How often the loop validates, writes last.pt and draws image grids: every n epochs, steps or
seconds (``trainer.val_every=2``, ``=500steps``, ``=60s``), or at epoch ends within a share of the
training time (``=4%``).

Epochs suit epochs of minutes. A model that runs an epoch in a second would pay a validation pass
and a checkpoint write every second, so such runs count steps or seconds instead; those events
fall inside an epoch, which the loop then continues where it paused. A share needs no knowledge of
the model or the data's size: an event falls at an epoch's end while the time spent outside the
optimizer steps, this event's last cost and the end's events included, stays within n% of the
training time so far, so the defaults cost under 5% whether an epoch takes a second or an hour;
only the end's validation, checkpoint and grids can exceed it alone, in a budget too short for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

UNITS = {"": "epochs", "epoch": "epochs", "epochs": "epochs", "step": "steps", "steps": "steps", "s": "seconds"}
UNITS["%"] = "percent"
PATTERN = re.compile(r"(\d+)\s*([a-z%]*)")


@dataclass(frozen=True)
class Every:
    """A cadence: every ``n`` epochs, optimizer steps, or seconds of the budget's clock
    (trainer.clock) since the event last happened; or at epoch ends within ``n`` percent of the time."""

    n: int
    unit: Literal["epochs", "steps", "seconds", "percent"]

    @classmethod
    def parse(cls, value: int | str) -> Every:
        """A plain number counts epochs; ``"500steps"`` steps; ``"30s"`` seconds; ``"4%"`` a share."""
        match = PATTERN.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            n, unit = value, "epochs"
        elif match and match[2] in UNITS:
            n, unit = int(match[1]), UNITS[match[2]]
        else:
            raise ValueError(
                f"{value!r} is not a cadence: give epochs (2), steps (500steps), seconds (30s) or a share of the time (4%)"
            )
        if n < 1 or (unit == "percent" and n > 100):
            raise ValueError(f"a cadence must be at least 1 (a share at most 100%), got {value!r}")
        return cls(n, unit)

    @property
    def timed(self) -> bool:
        """Whether it falls by a clock, which differs between processes (they must agree on it)."""
        return self.unit in ("seconds", "percent")

    def due(self, epoch: int, step: int, seconds_since: float, epoch_done: bool, share: float) -> bool:
        """Whether the event falls now: at the end of every n-th epoch, after every n-th step, once n
        seconds have passed since it last happened, or at an epoch's end where ``share`` (the part of
        the training time spent outside the steps if the event ran now) is at most n%."""
        if self.unit == "epochs":
            return epoch_done and epoch % self.n == 0
        if self.unit == "steps":
            return step % self.n == 0
        if self.unit == "percent":
            return epoch_done and share <= self.n / 100
        return seconds_since >= self.n


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


class Events:
    """The loop's events (validation, last.pt, image grids, best.pt kept at a mark) and when each
    falls: its cadence, when it last happened on the budget's clock, and what it cost last time."""

    NAMES = ("val", "ckpt", "sample", "mark")  # in the order they happen when due together

    def __init__(self, schedule: Schedule, now: float, val_images: int) -> None:
        self.cadences = (schedule.val_every, schedule.ckpt_every, schedule.sample_every)
        self.last = dict.fromkeys(self.NAMES, now)
        self.cost: dict[str, float | None] = dict.fromkeys(self.NAMES)  # wall seconds; None: not run yet
        self.marks = [m for m in schedule.marks if m > now]  # trainer.keep_best_at still ahead
        self.val_images = val_images

    def clock_bound(self, epoch_done: bool) -> bool:
        """Whether an event may fall by a clock now, which differs between processes (they must agree)."""
        return bool(self.marks) or any(e.unit == "seconds" or (e.timed and epoch_done) for e in self.cadences)

    def expected_cost(self, name: str, images_per_s: float) -> float:
        """Wall seconds the event took last time. A validation not yet run is priced from the training
        speed, a training step's cost per image of the split, so that a run too short to afford it does
        not pay for it at its first epoch's end. Not the third a forward pass alone would suggest:
        validation runs in float32 without the training step's compile or bf16, and the recipes measure
        0.4 to 0.6 of a training image per validation image (binarized MNIST on a 2-core EPYC with
        AVX512_BF16: PixelCNN 1,250 against 715 images/s, Diagonal BiLSTM 169 against 100), so a
        whole one errs toward the budget."""
        if name == "val" and self.cost[name] is None:
            return self.val_images / images_per_s if images_per_s > 0 else 0.0
        return self.cost[name] or 0.0

    def mark_reached(self, now: float) -> bool:
        return bool(self.marks) and now >= self.marks[0]

    def due(
        self, epoch: int, step: int, now: float, elapsed: float, outside: float, epoch_done: bool, images_per_s: float
    ) -> list[bool]:
        """Which events fall now (``now``: the budget's clock; ``elapsed`` and ``outside``: wall seconds of
        training and of it outside the steps). An event that falls adds its cost to the time outside
        the steps the next one is judged by. A share is judged with the end's events reserved (every
        event happens when training stops), so that what the cadences take leaves room for them: the
        run ends within the share unless the end's events alone exceed it. A mark validates itself
        where no validation falls with it."""
        outside += sum(self.expected_cost(name, images_per_s) for name in self.NAMES[:3])  # the end's
        due = []
        for name, every in zip(self.NAMES, self.cadences):
            cost = self.expected_cost(name, images_per_s)
            share = (outside + cost) / max(elapsed + cost, 1e-9)
            due.append(every.due(epoch, step, now - self.last[name], epoch_done, share))
            outside += cost if due[-1] else 0.0
        due.append(self.mark_reached(now))
        return due

    def happened(self, names: tuple[str, ...] | list[str], now: float) -> None:
        """``names`` took place at ``now`` on the budget's clock: their cadences count from here."""
        self.last.update(dict.fromkeys(names, now))

    def passed_marks(self, now: float) -> list[float]:
        """The marks ``now`` has reached, in minutes, taken off the list."""
        passed = []
        while self.mark_reached(now):
            passed.append(self.marks.pop(0) / 60)
        return passed
