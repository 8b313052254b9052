"""Optimizers by config name (``optim=adam``, ``optim=rmsprop``) and an optional LR schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from genctl.config import build
from genctl.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.add("adam", torch.optim.Adam)
OPTIMIZERS.add("rmsprop", torch.optim.RMSprop)


def build_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    name = str(cfg.name)
    optimizer = OPTIMIZERS.get(name)
    SCHEDULES.get(str(cfg.schedule))  # an unknown schedule fails here, before any training
    options = {k: v for k, v in cfg.items() if k not in ("name", "schedule", "lr_warmup_steps")}
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return build(f"optim '{name}'", optimizer, options, params=params)


# the LR's shape after warm-up, as a multiplier of the fraction of the run done (by epochs or by time)
SCHEDULES: Registry[Callable[[float], float]] = Registry("optim.schedule")
SCHEDULES.add("constant", lambda progress: 1.0)
SCHEDULES.add("cosine", lambda progress: 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class LRSchedule:
    """``optim.schedule`` with ``optim.lr_warmup_steps`` over the optimizer's base LRs. The LR is a
    function of the step and of the fraction of the run done, both in the training progress, so
    it needs no state of its own to continue a run."""

    schedule: str
    warmup_steps: int
    base_lrs: list[float]

    def __post_init__(self) -> None:
        self.shape = SCHEDULES.get(self.schedule)  # looked up once, not at every step

    def factor(self, step: int, done: float) -> float:
        """Multiplier on the base LR: linear warm-up over ``warmup_steps``, then the schedule's shape
        (constant, or a cosine decay to 0 as ``done`` goes to 1, so it ends where the budget does)."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.shape(done)

    def apply(self, optimizer: torch.optim.Optimizer, step: int, done: float) -> None:
        factor = self.factor(step, done)
        for group, lr in zip(optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * factor

    def state_dict(self) -> dict[str, Any]:
        """What the run trained with, for the record; a resume takes its own ``optim.*`` instead
        (a changed ``optim.lr`` holds from the resumed step on)."""
        return {"base_lrs": self.base_lrs, "schedule": self.schedule}


def build_schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> LRSchedule:
    return LRSchedule(str(cfg.schedule), int(cfg.lr_warmup_steps), [group["lr"] for group in optimizer.param_groups])
