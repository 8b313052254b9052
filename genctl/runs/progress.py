"""Where a training run stands: part of every checkpoint, so the checkpoint's reader
(:mod:`genctl.runs.schema`) checks it field by field and the loop continues from it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # wall-clock seconds spent training, summed over resumes
    cpu_seconds: float = 0.0  # this process's CPU seconds (all threads) spent training, summed over resumes
    best_val: float = math.inf
    best_epoch: int = 0
    skipped: int = 0  # steps with a non-finite loss, not applied (trainer.skip_nonfinite)
    outside: float = 0.0  # wall-clock seconds of the training time spent outside the steps (validation, checkpoints, grids, logs)
    marks: float = 0.0  # of outside: keeping best.pt at trainer.keep_best_at's marks, with the validations only they asked for
