"""The training loop every model family shares.

It knows models only through ``genctl.models.base.GenerativeModel`` and losses through
``genctl.losses.Loss``: it never asks which model it is training.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from genctl.config import build
from genctl.data import Batches, load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import evaluate, evaluating, label
from genctl.images import make_grid, save_grid
from genctl.losses import Loss, build_loss
from genctl.models import GenerativeModel, build_model
from genctl.runtime import resolve_device, seed_everything
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
    model: GenerativeModel, loss_fn: Loss, x: torch.Tensor, labels: torch.Tensor | None, batch_size: int, seed: int
) -> dict[str, float]:
    """The final objective (no warm-up) averaged over ``x``, with a fixed RNG."""
    sums: dict[str, torch.Tensor] = {}
    with evaluating(model, seed):
        for batch, y in Batches(x, batch_size, labels=labels):
            for name, value in loss_fn(model, batch, None, y).items():
                sums[name] = sums.get(name, 0) + value.double() * len(batch)
    return {name: float(total) / len(x) for name, total in sums.items()}


def log_images(writer: Any, model: GenerativeModel, val_x: torch.Tensor, opts: TrainerOptions, step: int) -> None:
    with evaluating(model, opts.seed):
        if model.can_sample:
            writer.add_image("samples", make_grid(model.sample(opts.num_samples)), step)
        if model.has_latents and len(val_x):
            x = val_x[:32]
            writer.add_image("reconstructions", make_grid(torch.cat([x, model.reconstruct(x)])), step)


def save_final_images(model: GenerativeModel, val_x: torch.Tensor, opts: TrainerOptions, run_dir: Path) -> list[str]:
    written = []
    with evaluating(model, opts.seed):
        if model.can_sample:
            written.append(str(save_grid(model.sample(opts.num_samples), run_dir / "samples.png")))
        if model.has_latents and len(val_x):
            x = val_x[:32]
            written.append(str(save_grid(torch.cat([x, model.reconstruct(x)]), run_dir / "reconstructions.png")))
    return written


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints, logs, samples and metrics.json."""
    opts = build("trainer", TrainerOptions, cfg.trainer)
    device = resolve_device(opts.device)
    seed_everything(opts.seed)
    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data.shape, data.binary).to(device)
    loss_fn = build_loss(cfg.loss, model, str(cfg.model.name))
    optimizer = build_optimizer(cfg.optim, model.parameters())
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    images, dynamic = data.train_source()
    # labels travel with the images only to class-conditional models
    labels = {s: t.to(device) for s, t in data.labels.items()} if model.conditional else dict.fromkeys(data.labels)
    if model.conditional:
        classes = int(data.labels["train"].max()) + 1
        if classes > model.num_classes:
            raise GenctlError(f"the dataset has {classes} classes but model.num_classes={model.num_classes}")
    batches = Batches(
        images.to(device), opts.batch_size, shuffle=True, dynamic_binarize=dynamic,
        generator=torch.Generator(device).manual_seed(opts.seed), labels=labels["train"],
    )
    val_x = data.fixed("val").to(device)
    progress = Progress()
    config = OmegaConf.to_container(cfg, resolve=True)

    if cfg.resume:
        path = resolve_checkpoint(cfg.resume, prefer="last.pt")
        state = load_checkpoint(path)
        load_weights(model, state, path)
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["data"])
        restore_rng_state(state["rng"], batches.generator)
        progress = Progress(**state["progress"])
        log.info("resumed from %s at epoch %d, step %d", path, progress.epoch, progress.step)

    def snapshot() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "data": batches.state_dict(),
            "rng": rng_state(batches.generator),
            "progress": asdict(progress),
            "config": config,
            "data_shape": list(data.shape),
            "binary": data.binary,
        }

    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when training

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=progress.step or None)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "model %s (%s parameters) on %s: %d train / %d val / %d test images %s, binarize=%s",
        cfg.model.name, f"{n_params:,}", device, len(data.train), len(data.val), len(data.test),
        "x".join(map(str, data.shape)), data.binarize,
    )
    total_steps = opts.epochs * len(batches)
    budget = opts.max_time * 60 if opts.max_time else None
    stop_reason = "completed"
    images_per_s = float("nan")
    train_means: dict[str, float] = {}
    clock = time.monotonic()
    elapsed_before = progress.elapsed

    with stop_on_signals() as signals:
        while progress.epoch < opts.epochs and stop_reason == "completed":
            bar = tqdm(
                batches, total=len(batches), initial=batches.position // opts.batch_size,
                desc=f"epoch {progress.epoch + 1}/{opts.epochs}", dynamic_ncols=True, leave=False,
            )
            sums: dict[str, torch.Tensor] = {}
            window, window_images, window_clock = 0, 0, time.monotonic()
            epoch_sums: dict[str, float] = {}
            epoch_batches = 0
            for x, y in bar:
                progress_frac = progress.step / total_steps
                if budget:
                    progress_frac = max(progress_frac, (elapsed_before + time.monotonic() - clock) / budget)
                factor = lr_factor(str(cfg.optim.schedule), int(cfg.optim.warmup_steps), progress.step, progress_frac)
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = lr * factor
                out = loss_fn(model, x, progress.step, y)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if opts.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
                optimizer.step()
                progress.step += 1
                for name, value in out.items():
                    sums[name] = sums.get(name, 0) + value.detach()
                window += 1
                window_images += len(x)
                if window == opts.log_every or batches.position >= len(batches.images):
                    means = {name: float(total) / window for name, total in sums.items()}  # one sync per window
                    if not all(math.isfinite(v) for v in means.values()):
                        raise GenctlError(
                            f"non-finite loss between steps {progress.step - window + 1} and {progress.step} "
                            f"({', '.join(f'{k}={v}' for k, v in means.items())}); the last good checkpoint is "
                            f"{run_dir / 'last.pt'}: lower optim.lr or set trainer.grad_clip"
                        )
                    now = time.monotonic()
                    images_per_s = window_images / max(now - window_clock, 1e-9)
                    for name, value in means.items():
                        writer.add_scalar(f"train/{name}", value, progress.step)
                        epoch_sums[name] = epoch_sums.get(name, 0.0) + value * window
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], progress.step)
                    writer.add_scalar("train/images_per_s", images_per_s, progress.step)
                    bar.set_postfix(loss=f"{means['loss']:.3f}", refresh=False)
                    epoch_batches += window
                    sums, window, window_images, window_clock = {}, 0, 0, now
                progress.elapsed = elapsed_before + time.monotonic() - clock
                if signals:
                    stop_reason = "interrupted"
                elif opts.max_steps is not None and progress.step >= opts.max_steps:
                    stop_reason = "max_steps"
                elif budget is not None and progress.elapsed >= budget:
                    stop_reason = "max_time"
                if stop_reason != "completed":
                    break
            bar.close()
            epoch_done = batches.position >= len(batches.images) and batches.order is None
            if epoch_done:
                progress.epoch += 1
            train_means = {k: v / max(epoch_batches, 1) for k, v in epoch_sums.items()}
            if stop_reason == "interrupted":
                save_checkpoint(run_dir / "last.pt", snapshot())
                raise Interrupted(
                    f"stopped by {signals[0]} at step {progress.step}; resumable checkpoint {run_dir / 'last.pt'}; "
                    f"continue with: genctl train resume={run_dir}"
                )
            finishing = stop_reason != "completed" or progress.epoch >= opts.epochs
            if finishing or (epoch_done and progress.epoch % opts.val_every == 0):
                if len(val_x):
                    val = mean_loss(model, loss_fn, val_x, labels["val"], opts.eval_batch_size, opts.seed)
                    for name, value in val.items():
                        writer.add_scalar(f"val/{name}", value, progress.step)
                    criterion = val["loss"]
                else:
                    val, criterion = {}, train_means.get("loss", math.inf)
                improved = criterion < progress.best_val
                if improved:
                    progress.best_val, progress.best_epoch = criterion, progress.epoch
                    save_checkpoint(run_dir / "best.pt", snapshot())
                log.info(
                    "epoch %d/%d step %d  train loss %.4f  val loss %s%s  %.0f img/s  %.0fs",
                    progress.epoch, opts.epochs, progress.step, train_means.get("loss", math.nan),
                    f"{val['loss']:.4f}" if val else "n/a", "  (best)" if improved else "",
                    images_per_s, progress.elapsed,
                )
            if finishing or (epoch_done and progress.epoch % opts.ckpt_every == 0):
                save_checkpoint(run_dir / "last.pt", snapshot())
            if finishing or (epoch_done and progress.epoch % opts.sample_every == 0):
                log_images(writer, model, val_x, opts, progress.step)

    if stop_reason != "completed":
        log.info("stopped early (%s) after %d steps, %.0fs", stop_reason, progress.step, progress.elapsed)
    results: dict[str, Any] = {
        "model": str(cfg.model.name),
        "dataset": data.name,
        "binarize": data.binarize,
        "params": n_params,
        "epochs": progress.epoch,
        "steps": progress.step,
        "stopped": stop_reason,
        "wall_time_s": round(progress.elapsed, 1),
        "train_images_per_s": round(progress.step * opts.batch_size / max(progress.elapsed, 1e-9), 1),
        "peak_memory_mb": peak_memory_mb(device),
        "best_epoch": progress.best_epoch,
        "best_val_loss": progress.best_val,
        "train_loss": train_means.get("loss"),
    }
    best = run_dir / "best.pt"
    if best.is_file():
        load_weights(model, load_checkpoint(best, map_location=device), best)
    results["images"] = save_final_images(model, val_x, opts, run_dir)
    if opts.test_at_end:
        e = cfg.eval
        test_means = evaluate(
            model, data.fixed("test").to(device), int(e.batch_size), int(e.k), int(e.chunk), int(e.seed),
            progress=True, labels=labels["test"],
        )
        results["test"] = label(test_means, data.shape, data.binary, int(e.k))
        results["test_split"] = f"{data.name} test ({len(data.test)} images), checkpoint best.pt"
        for name, value in test_means.items():
            writer.add_scalar(f"test/{name}", value, progress.step)
        log.info("test (best.pt): %s", summarize(results["test"]))
    writer.close()
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def summarize(metrics: dict[str, Any]) -> str:
    """One line: ``nll_iwae 95.31 nats (0.1754 bits/dim, IWAE bound, k=100); mse 0.0123``."""
    parts = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            parts.append(f"{name} {value['nats']:.2f} nats ({value['bits_per_dim']:.4f} bits/dim, {value['estimator']})")
        else:
            parts.append(f"{name} {value:.4f}")
    return "; ".join(parts)

