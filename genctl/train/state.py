"""Where a training run stands, and every random stream it draws from: what a checkpoint must
hold, beyond weights and optimizer state, for a resumed run to take the very steps an
uninterrupted one takes."""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from genctl import distributed
from genctl.data import Batches
from genctl.errors import GenctlError
from genctl.runs.progress import Progress
from genctl.train.optim import LRSchedule

if TYPE_CHECKING:
    from genctl.train.step import TrainStep


class Stopwatch:
    """Both clocks a run can be budgeted by, continued from what a resumed run had spent: the wall
    clock, and the process's CPU time over all its threads (time the process is not scheduled
    costs it nothing, though its threads' spin-waits on a busy machine do)."""

    def __init__(self, progress: Progress) -> None:
        self.wall0 = time.monotonic() - progress.elapsed
        self.cpu0 = time.process_time() - progress.cpu_seconds

    def update(self, progress: Progress) -> None:
        progress.elapsed, progress.cpu_seconds = time.monotonic() - self.wall0, time.process_time() - self.cpu0


def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from, as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": random.getstate(),
        "data": data_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    data_generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture(model: nn.Module, step: TrainStep, lr: LRSchedule, batches: Batches, progress: Progress) -> dict[str, Any]:
    """A training run's state as a checkpoint holds it; every rank must call this (each rank's RNG
    state is gathered), the result is rank 0's to write."""
    rng_ranks = distributed.gather(rng_state(batches.generator))
    averaged = {} if step.ema is None else {"ema": step.ema.state_dict()}
    return {
        **averaged,
        "model": model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scaler": step.scaler.state_dict(),
        # the LR is a function of (step, elapsed time) in "progress"; this is the schedule's state
        "scheduler": lr.state_dict(),
        "data": batches.state_dict(),
        "rng": rng_ranks[0],
        "rng_ranks": rng_ranks,
        "progress": asdict(progress),
    }


def restore(state: dict[str, Any], step: TrainStep, batches: Batches, path: Path) -> Progress:
    """Put checkpoint ``path``'s optimizer state, data order and random streams back (the weights
    are loaded apart, with a clear error on a mismatch); where training stood. The optimizer's
    settings and the LR schedule are the resumed run's own config: what a resume may change takes effect."""
    try:
        return _restore(state, step, batches)
    except (RuntimeError, ValueError) as e:  # torch's, numpy's and random's own checks of what they restore
        what = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise GenctlError(
            f"checkpoint {path} cannot be resumed: its training state does not fit this run ({what}); "
            "resume from a checkpoint genctl train wrote for this model"
        ) from e


def _restore(state: dict[str, Any], step: TrainStep, batches: Batches) -> Progress:
    settings = [{k: v for k, v in group.items() if k != "params"} for group in step.optimizer.param_groups]
    step.optimizer.load_state_dict(state["optimizer"])
    for group, own in zip(step.optimizer.param_groups, settings):
        group.update(own)  # the moments carry on; this run's optim.* (lr, betas, weight decay...) hold
    if "scaler" in state:  # absent in checkpoints written before trainer.precision existed
        step.scaler.load_state_dict(state["scaler"])
    batches.load_state_dict(state["data"])
    if step.ema is not None and "ema" in state:  # a run that turns the average on at a resume starts it there
        step.ema.load_state_dict(state["ema"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    rank = distributed.rank()  # a run resumed with more processes than it had: the extra ranks take rank 0's
    restore_rng_state(ranks[rank] if rank < len(ranks) else state["rng"], batches.generator)
    return Progress(**state["progress"])


def changed_settings(was: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``key old -> new`` for every setting a resume changed (resolved configs as plain dicts): the
    log says what the rest of the run trains with, since the checkpoint's config holds the new values."""
    changed = []
    for key in sorted(set(was) | set(now)):
        old, new = was.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new and key != "resume":
            changed.append(f"{prefix}{key} {old} -> {new}")
    return changed
