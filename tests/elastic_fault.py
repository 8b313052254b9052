"""What torchrun starts in place of ``-m genctl`` when a test kills a worker: genctl's own command,
with the rank named in ``GENCTL_KILL=RANK:STEP`` SIGKILLing itself before that step, in torchrun's
first attempt only, as a process that crashes or is killed ends: no handler runs, nothing is saved."""

from __future__ import annotations

import os
import signal
import sys

import torch

from genctl.cli.main import main
from genctl.runs.progress import Progress
from genctl.train.step import TrainStep


def kill_before(step: int) -> None:
    take_step = TrainStep.__call__

    def call(self: TrainStep, x: torch.Tensor, y: torch.Tensor | None, progress: Progress) -> dict[str, torch.Tensor] | None:
        if progress.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return take_step(self, x, y, progress)

    TrainStep.__call__ = call  # type: ignore[method-assign]


if __name__ == "__main__":
    rank, step = map(int, os.environ["GENCTL_KILL"].split(":"))
    if int(os.environ["RANK"]) == rank and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        kill_before(step)
    sys.exit(main())
