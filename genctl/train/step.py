"""The training step, in the order of nanoGPT's loop: forward, loss, backward, clip, step, bookkeeping."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genctl import distributed
from genctl.errors import GenctlError
from genctl.losses import Loss
from genctl.models import GenerativeModel
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.progress import Progress
from genctl.train.ema import EMA
from genctl.train.precision import Precision


class LossStep(nn.Module):
    """The training objective as a module, so that DistributedDataParallel sees every model
    method a loss calls (``elbo_terms``, ``log_prob``, ...) as one forward pass, and
    torch.compile compiles model and loss together."""

    def __init__(self, model: GenerativeModel, loss_fn: Loss) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, step: int, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, x, step, y)


@dataclass
class TrainStep:
    """One optimizer step on one batch. ``loss_step`` is a :class:`LossStep` as training runs it
    (wrapped in DistributedDataParallel and torch.compile where configured); ``parameters`` are the
    model's, whose global gradient norm is clipped to ``grad_clip`` (0: no clipping)."""

    loss_step: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling for fp16; a pass-through when disabled
    parameters: list[nn.Parameter]
    grad_clip: float
    precision: Precision  # the forward pass's autocast (bf16/fp16) or float32, and why (trainer.precision=auto)
    device_type: str
    skip_nonfinite: bool  # a loss that is NaN/inf on any rank is not applied (one device sync per step)
    ema: EMA | None = None  # the moving average of the weights, updated after every applied step

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, progress: Progress) -> dict[str, torch.Tensor] | None:
        """The step's losses (detached, still on the device), or None when it was skipped."""
        autocast = self.precision.autocast
        with torch.autocast(self.device_type, autocast, enabled=autocast is not None):
            out = self.loss_step(x, progress.step, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        progress.step += 1
        if self.skip_nonfinite and distributed.largest_on_any_rank(int(not torch.isfinite(out["loss"].detach()).item())):
            progress.skipped += 1
            return None
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update()
        return {name: value.detach() for name, value in out.items()}


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

    def steps_since_nonfinite(self) -> int:
        """How many steps before the window's last its first non-finite loss came (0 where none is
        local: another rank's loss was the non-finite one)."""
        values = torch.stack(self.losses).float().cpu()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        return len(self.losses) - 1 - int(bad[0]) if len(bad) else 0


def nonfinite_error(step: int, position: str, means: dict[str, float], last: Path) -> GenctlError:
    """What stops a run whose loss went non-finite at ``step`` (``position``: its epoch and batch):
    the checkpoints on disk predate it and are left alone; ``last``, where one was written, is the
    one to go back to."""
    kept = (
        f"the last good checkpoint is {last} (step {load_checkpoint(last)['progress']['step']})"
        if last.is_file()
        else "no checkpoint had been written yet"
    )
    return GenctlError(
        f"non-finite loss at step {step} ({position}; window means "
        f"{', '.join(f'{k}={v:.4g}' for k, v in means.items())}); {kept}: lower optim.lr, set "
        "trainer.grad_clip, or trainer.skip_nonfinite=true to skip such steps"
    )
