"""The training loop every model family shares.

It knows models only through ``genctl.models.base.GenerativeModel`` and losses through
``genctl.losses.Loss``: it never asks which model it is training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from genctl.config import build
from genctl.data import Batches, load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluate, evaluating
from genctl.eval.report import describe, summarize
from genctl.images import make_grid, save_grid
from genctl.losses import Loss, build_loss
from genctl.models import GenerativeModel, build_model
from genctl.models.base import Reconstructs, Sampler, is_conditional
from genctl.runtime import resolve_device, seed_everything
from genctl.train import distributed
from genctl.train.checkpoint import (
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from genctl.train.optim import build_optimizer, lr_factor

log = logging.getLogger("genctl")


class Interrupted(GenctlError):
    """Training stopped by a signal after writing a resumable checkpoint."""

    exit_code = 130


@dataclass(frozen=True)
class TrainerOptions:
    """``configs/trainer/*.yaml``, checked. The YAML holds the values; there are no defaults here."""

    epochs: int
    batch_size: int
    device: str
    seed: int
    grad_clip: float
    max_time: float | None
    max_steps: int | None
    log_every: int
    val_every: int
    ckpt_every: int
    sample_every: int
    num_samples: int
    eval_batch_size: int
    test_at_end: bool
    precision: Literal[32, "bf16", "fp16"]
    skip_nonfinite: bool
    compile: bool

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every", "val_every", "ckpt_every", "sample_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time is in minutes and must be > 0, got {self.max_time}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # seconds spent training, summed over resumes
    best_val: float = math.inf
    best_epoch: int = 0
    skipped: int = 0  # steps with a non-finite loss, not applied (trainer.skip_nonfinite)


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


def mean_loss(
    model: GenerativeModel,
    loss_fn: Loss,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int,
    seed: int,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, float]:
    """The final objective (no warm-up) averaged over ``x``, with a fixed RNG. In data-parallel
    training each rank scores its share of ``x`` and the sums are added up over ranks."""
    sums: dict[str, torch.Tensor] = {}
    with evaluating(model, seed):
        for batch, y in Batches(x, batch_size, labels=labels, shard=shard):
            for name, value in loss_fn(model, batch, None, y).items():
                sums[name] = sums.get(name, 0) + value.double() * len(batch)
    totals = distributed.sum_tensors(list(sums.values()))
    return {name: float(total) / len(x) for name, total in zip(sums, totals)}


class LossStep(nn.Module):
    """The training objective as a module, so that DistributedDataParallel sees every model
    method a loss calls (``elbo_terms``, ``log_prob``, ...) as one forward pass."""

    def __init__(self, model: GenerativeModel, loss_fn: Loss) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, step: int, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, x, step, y)


class NullWriter:
    """TensorBoard on ranks other than 0: nothing is written."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def image_grids(
    model: GenerativeModel, val_x: torch.Tensor, opts: TrainerOptions
) -> tuple[dict[str, torch.Tensor], float | None]:
    """What a person looks at: samples (where the model has a prior) and reconstructions of
    validation images, originals above (where it has latents); and samples per second."""
    grids, rate = {}, None
    with evaluating(model, opts.seed):
        if isinstance(model, Sampler):
            start = time.perf_counter()
            grids["samples"] = model.sample(opts.num_samples)
            rate = opts.num_samples / max(time.perf_counter() - start, 1e-9)
        if isinstance(model, Reconstructs) and len(val_x):
            x = val_x[:32]
            grids["reconstructions"] = torch.cat([x, model.reconstruct(x)])
    return grids, rate


class Trainer:
    """One training run: everything is built from the config in ``__init__``; :meth:`fit` runs it."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.opts = opts = build("trainer", TrainerOptions, cfg.trainer)
        distributed.init()
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.device = resolve_device(opts.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if opts.batch_size % self.world:
            raise GenctlError(
                f"trainer.batch_size={opts.batch_size} is the global batch: make it divisible by {self.world} processes"
            )
        seed_everything(opts.seed)
        self.data = data = load_dataset(cfg.dataset)
        self.model = build_model(cfg.model, data.shape, data.binary).to(self.device)
        self.loss_fn = build_loss(cfg.loss, self.model, str(cfg.model.name))
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        if opts.precision == "fp16" and self.device.type != "cuda":
            raise GenctlError(f"trainer.precision=fp16 needs a CUDA device (this run is on {self.device}); use bf16 or 32")
        # mixed precision in the training step only; evaluation stays in float32
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=opts.precision == "fp16")
        # labels travel with the images only to class-conditional models
        if is_conditional(self.model):
            self.labels = {s: t.to(self.device) for s, t in data.labels.items()}
            classes = int(data.labels["train"].max()) + 1
            if classes > self.model.num_classes:
                raise GenctlError(f"the dataset has {classes} classes but model.num_classes={self.model.num_classes}")
        else:
            self.labels = dict.fromkeys(data.labels)
        images, dynamic = data.train_source()
        self.batches = Batches(
            images.to(self.device),
            opts.batch_size,
            shuffle=True,
            dynamic_binarize=dynamic,
            generator=torch.Generator(self.device).manual_seed(opts.seed),
            labels=self.labels["train"],
            shard=(self.rank, self.world),
        )
        self.step_fn: nn.Module = LossStep(self.model, self.loss_fn)
        if self.world > 1:  # rank 0's initial weights are broadcast; gradients are averaged
            self.step_fn = DistributedDataParallel(self.step_fn, device_ids=[self.device] if self.device.type == "cuda" else None)
            torch.manual_seed(opts.seed + 1_000_003 * self.rank)  # each rank its own posterior noise
        if opts.compile:  # the training step only: evaluation and sampling run the plain module
            self.step_fn = torch.compile(self.step_fn)
        self.val_x = data.fixed("val").to(self.device)
        self.progress = Progress()
        self.config = OmegaConf.to_container(cfg, resolve=True)
        if cfg.resume:
            self.resume(resolve_checkpoint(cfg.resume, prefer="last.pt"))
        self.budget = opts.max_time * 60 if opts.max_time else None
        self.images_per_s = float("nan")

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        load_weights(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:  # absent in checkpoints written before trainer.precision existed
            self.scaler.load_state_dict(state["scaler"])
        if "scheduler" in state:  # as torch's schedulers do: the schedule continues from the stored LRs
            self.base_lrs = list(state["scheduler"]["base_lrs"])
        self.batches.load_state_dict(state["data"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        restore_rng_state(ranks[self.rank] if self.rank < len(ranks) else state["rng"], self.batches.generator)
        self.progress = Progress(**state["progress"])
        log.info("resumed from %s at epoch %d, step %d", path, self.progress.epoch, self.progress.step)

    def save(self, name: str) -> None:
        """Write ``name`` in the run folder (rank 0; every rank must call it: RNG states are gathered)."""
        ranks = distributed.gather(rng_state(self.batches.generator))
        if self.rank == 0:
            save_checkpoint(self.run_dir / name, self.snapshot(ranks))

    def snapshot(self, rng_ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything needed to rebuild the model and continue exactly where training stands."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            # the LR schedule is a function of (step, elapsed time) in "progress"; this is its state
            "scheduler": {"base_lrs": self.base_lrs, "schedule": str(self.cfg.optim.schedule)},
            "data": self.batches.state_dict(),
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "progress": asdict(self.progress),
            "config": self.config,
            "data_shape": list(self.data.shape),
            "binary": self.data.binary,
        }

    def elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._clock

    def set_lr(self) -> None:
        done = self.progress.step / (self.opts.epochs * len(self.batches))
        if self.budget:
            done = max(done, self.elapsed() / self.budget)
        factor = lr_factor(str(self.cfg.optim.schedule), int(self.cfg.optim.warmup_steps), self.progress.step, done)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * factor

    STOPS = (None, "max_steps", "max_time", "interrupted")

    def stop_reason(self, signals: list[str]) -> str | None:
        """Why to stop after this step; with several processes, the strongest reason any has."""
        reason = None
        if signals:
            reason = "interrupted"
        elif self.opts.max_steps is not None and self.progress.step >= self.opts.max_steps:
            reason = "max_steps"
        elif self.budget is not None and self.progress.elapsed >= self.budget:
            reason = "max_time"
        return self.STOPS[distributed.max_code(self.STOPS.index(reason))]

    def run_epoch(self, signals: list[str]) -> tuple[str | None, dict[str, float]]:
        """Train until the epoch ends or a stop condition holds; (stop reason, mean train losses).

        Losses are summed on the device and read once per ``log_every`` steps (one sync), and
        at the epoch's end or a stop, so no step goes unlogged.
        """
        opts, progress, batches = self.opts, self.progress, self.batches
        bar = tqdm(
            batches,
            total=len(batches),
            initial=batches.position // opts.batch_size,
            desc=f"epoch {progress.epoch + 1}/{opts.epochs}",
            dynamic_ncols=True,
            leave=False,
            disable=self.rank > 0,
        )
        sums: dict[str, torch.Tensor] = {}
        losses: list[torch.Tensor] = []  # this window's per-step losses: which step went non-finite
        window, window_images, window_clock = 0, 0, time.monotonic()
        epoch_sums: dict[str, float] = {}
        epoch_steps = 0
        stop = None
        for x, y in bar:
            self.set_lr()
            with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
                out = self.step_fn(x, progress.step, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out["loss"]).backward()
            progress.step += 1
            # one device sync per step, only when asked for: skip this step if any rank's loss is bad
            if opts.skip_nonfinite and distributed.max_code(int(not torch.isfinite(out["loss"].detach()).item())):
                progress.skipped += 1
                log.warning(
                    "step %d (%s): non-finite loss, step skipped (trainer.skip_nonfinite=true)", progress.step, self.where(0)
                )
            else:
                if opts.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                for name, value in out.items():
                    sums[name] = sums.get(name, 0) + value.detach()
                losses.append(out["loss"].detach())
                window += 1
            window_images += len(x)
            progress.elapsed = self.elapsed()
            stop = self.stop_reason(signals)
            if window and (window == opts.log_every or batches.position >= len(batches.images) or stop):
                totals = distributed.sum_tensors(list(sums.values()))
                means = {name: float(total) / (window * self.world) for name, total in zip(sums, totals)}
                if not math.isfinite(means["loss"]):
                    self.non_finite(losses, means)
                now = time.monotonic()
                self.images_per_s = window_images * self.world / max(now - window_clock, 1e-9)
                for name, value in means.items():
                    self.writer.add_scalar(f"train/{name}", value, progress.step)
                    epoch_sums[name] = epoch_sums.get(name, 0.0) + value * window
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], progress.step)
                self.writer.add_scalar("train/images_per_s", self.images_per_s, progress.step)
                bar.set_postfix(loss=f"{means['loss']:.3f}", refresh=False)
                epoch_steps += window
                sums, losses, window, window_images, window_clock = {}, [], 0, 0, now
            if stop:
                break
        bar.close()
        return stop, {k: v / max(epoch_steps, 1) for k, v in epoch_sums.items()}

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
        step = self.progress.step - back
        last = self.run_dir / "last.pt"
        kept = (
            f"the last good checkpoint is {last} (step {load_checkpoint(last)['progress']['step']})"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise GenctlError(
            f"non-finite loss at step {step} ({self.where(back)}; window means "
            f"{', '.join(f'{k}={v:.4g}' for k, v in means.items())}); {kept}: lower optim.lr, set "
            "trainer.grad_clip, or trainer.skip_nonfinite=true to skip such steps"
        )

    def validate(self, train_means: dict[str, float]) -> None:
        """Validation loss (the train loss where there is no validation split) picks best.pt."""
        progress = self.progress
        if len(self.val_x):
            val = mean_loss(
                self.model,
                self.loss_fn,
                self.val_x,
                self.labels["val"],
                self.opts.eval_batch_size,
                self.opts.seed,
                shard=(self.rank, self.world),
            )
            for name, value in val.items():
                self.writer.add_scalar(f"val/{name}", value, progress.step)
            criterion = val["loss"]
        else:
            val, criterion = {}, train_means.get("loss", math.inf)
        improved = criterion < progress.best_val
        record = {
            "epoch": progress.epoch,
            "step": progress.step,
            "elapsed_s": round(progress.elapsed, 2),
            "train_loss": train_means.get("loss"),
            "val_loss": val.get("loss"),
        }
        if self.rank == 0:
            with open(self.run_dir / "history.jsonl", "a") as f:  # for genctl compare's curves
                f.write(json.dumps(record) + "\n")
        if improved:
            progress.best_val, progress.best_epoch = criterion, progress.epoch
            self.save("best.pt")
        log.info(
            "epoch %d/%d step %d  train loss %.4f  val loss %s%s  %.0f img/s  %.0fs",
            progress.epoch,
            self.opts.epochs,
            progress.step,
            train_means.get("loss", math.nan),
            f"{val['loss']:.4f}" if val else "n/a",
            "  (best)" if improved else "",
            self.images_per_s,
            progress.elapsed,
        )

    def fit(self) -> dict[str, Any]:
        """Train, then test best.pt; write checkpoints, logs, samples and metrics.json."""
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when training

        opts, progress = self.opts, self.progress
        self.writer = (
            SummaryWriter(str(self.run_dir / "tb"), purge_step=progress.step or None) if self.rank == 0 else NullWriter()
        )
        self.n_params = sum(p.numel() for p in self.model.parameters())
        data = self.data
        log.info(
            "model %s (%s parameters) on %s: %d train / %d val / %d test images %s, binarize=%s",
            self.cfg.model.name,
            f"{self.n_params:,}",
            self.device,
            len(data.train),
            len(data.val),
            len(data.test),
            "x".join(map(str, data.shape)),
            data.binarize,
        )
        self._clock, self._elapsed_before = time.monotonic(), progress.elapsed
        # a resumed run whose budget is already spent only finishes: it tests best.pt, no extra step
        stop, train_means = (self.stop_reason([]) if progress.step else None), {}
        with stop_on_signals() as signals:
            while progress.epoch < opts.epochs and stop is None:
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
                finishing = stop is not None or progress.epoch >= opts.epochs
                if finishing or (epoch_done and progress.epoch % opts.val_every == 0):
                    self.validate(train_means)
                if finishing or (epoch_done and progress.epoch % opts.ckpt_every == 0):
                    self.save("last.pt")
                if finishing or (epoch_done and progress.epoch % opts.sample_every == 0):
                    for name, grid in image_grids(self.model, self.val_x, opts)[0].items():
                        self.writer.add_image(name, make_grid(grid), progress.step)
        if stop:
            log.info("stopped early (%s) after %d steps, %.0fs", stop, progress.step, progress.elapsed)
        if self.rank > 0:  # rank 0 tests best.pt and writes metrics.json alone
            return {"best_val_loss": progress.best_val}
        results = self.finish(stop or "completed", train_means)
        self.writer.close()
        return results

    def finish(self, stop: str, train_means: dict[str, float]) -> dict[str, Any]:
        opts, progress, data, run_dir = self.opts, self.progress, self.data, self.run_dir
        results: dict[str, Any] = {
            "model": str(self.cfg.model.name),
            "dataset": data.name,
            "binarize": data.binarize,
            "params": self.n_params,
            "epochs": progress.epoch,
            "steps": progress.step,
            "stopped": stop,
            "wall_time_s": round(progress.elapsed, 1),
            "train_images_per_s": round(progress.step * opts.batch_size / max(progress.elapsed, 1e-9), 1),
            "peak_memory_mb": peak_memory_mb(self.device),
            "best_epoch": progress.best_epoch,
            "skipped_steps": progress.skipped,
            "best_val_loss": progress.best_val,
            "train_loss": train_means.get("loss"),
        }
        best = run_dir / "best.pt"
        if best.is_file():
            load_weights(self.model, load_checkpoint(best, map_location=self.device), best)
        grids, results["samples_per_s"] = image_grids(self.model, self.val_x, opts)
        results["images"] = [str(save_grid(grid, run_dir / f"{name}.png")) for name, grid in grids.items()]
        if opts.test_at_end:
            e = self.cfg.eval
            test_means = evaluate(
                self.model,
                data.fixed("test").to(self.device),
                int(e.batch_size),
                int(e.k),
                int(e.chunk),
                int(e.seed),
                progress=True,
                labels=self.labels["test"],
            )
            results["test"] = describe(test_means, self.model, int(e.k))
            results["test_split"] = f"{data.name} test ({len(data.test)} images), checkpoint best.pt"
            for name, value in test_means.items():
                self.writer.add_scalar(f"test/{name}", value, progress.step)
            log.info("test (best.pt): %s", summarize(results["test"]))
        (run_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
        return results


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints, logs, samples and metrics.json."""
    try:
        return Trainer(cfg, run_dir).fit()
    finally:
        distributed.finish()


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
