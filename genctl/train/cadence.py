"""How often the loop validates, writes last.pt and draws image grids: every n epochs, steps or
seconds (``trainer.val_every=2``, ``=500steps``, ``=60s``), or at epoch ends within a share of the
training time (``=4%``).

Epochs suit epochs of minutes. A model that runs an epoch in a second would pay a validation pass
and a checkpoint write every second, so such runs count steps or seconds instead; those events
fall inside an epoch, which the loop then continues where it paused. A share needs no knowledge of
the model or the data's size: an event falls at an epoch's end while the time spent outside the
optimizer steps, this event's last cost included, stays within n% of the training time, so the
defaults cost under 5% whether an epoch takes a second or an hour.
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
