"""How often the loop validates, writes last.pt and draws image grids: every n epochs, steps or
seconds (``trainer.val_every=2``, ``=500steps``, ``=60s``).

Epochs suit epochs of minutes. A model that runs an epoch in a second would pay a validation pass
and a checkpoint write every second, so such runs count steps or seconds instead; those events
fall inside an epoch, which the loop then continues where it paused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

UNITS = {"": "epochs", "epoch": "epochs", "epochs": "epochs", "step": "steps", "steps": "steps", "s": "seconds"}
PATTERN = re.compile(r"(\d+)\s*([a-z]*)")


@dataclass(frozen=True)
class Every:
    """A cadence: every ``n`` epochs, optimizer steps, or seconds of the budget's clock
    (trainer.clock) since the event last happened."""

    n: int
    unit: Literal["epochs", "steps", "seconds"]

    @classmethod
    def parse(cls, value: int | str) -> Every:
        """A plain number counts epochs; ``"500steps"`` steps; ``"30s"`` seconds."""
        match = PATTERN.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            n, unit = value, "epochs"
        elif match and match[2] in UNITS:
            n, unit = int(match[1]), UNITS[match[2]]
        else:
            raise ValueError(f"{value!r} is not a cadence: give epochs (2), steps (500steps) or seconds (30s)")
        if n < 1:
            raise ValueError(f"a cadence must be at least 1, got {value!r}")
        return cls(n, unit)

    def due(self, epoch: int, step: int, seconds_since: float, epoch_done: bool) -> bool:
        """Whether the event falls now: at the end of every n-th epoch, after every n-th step, or
        once n seconds have passed since it last happened."""
        if self.unit == "epochs":
            return epoch_done and epoch % self.n == 0
        if self.unit == "steps":
            return step % self.n == 0
        return seconds_since >= self.n
