"""The composition root of ``genctl train``: the config is read here, and only here, into the
objects a training run is made of (as ``train(cfg)`` in the lightning-hydra-template)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from genctl import distributed
from genctl.config import build
from genctl.data import Batches, load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import EvalOptions
from genctl.losses import Loss, build_loss
from genctl.models import GenerativeModel, build_model
from genctl.models.base import is_conditional
from genctl.runs.folder import LAST, RunFolder, resolve_checkpoint
from genctl.runs.progress import Progress
from genctl.runtime import SEED_STRIDE, check_fits, check_seed, resolve_device, seed_everything
from genctl.train.cadence import Every
from genctl.train.ema import EMA
from genctl.train.hooks import EpochLog, History, Hook, ImageGrids, LatentUnits, ProgressBar, TensorBoard
from genctl.train.loop import Schedule, Trainer
from genctl.train.optim import build_optimizer, build_schedule
from genctl.train.precision import resolve_precision
from genctl.train.report import Report
from genctl.train.step import LossStep, TrainStep
from genctl.train.trackers import chosen_loggers, trackers
from genctl.train.validation import Validation

log = logging.getLogger("genctl")


@dataclass(frozen=True)
class TrainerOptions:
    """``configs/trainer/*.yaml``, checked. The YAML holds the values; there are no defaults here."""

    epochs: int
    batch_size: int
    device: str
    seed: int
    grad_clip: float
    max_time: float | None
    clock: Literal["wall", "cpu"]
    max_steps: int | None
    log_every: int
    val_every: int | str  # a cadence (genctl.train.cadence): epochs (2), steps (500steps) or seconds (30s)
    ckpt_every: int | str
    sample_every: int | str
    num_samples: int
    num_reconstructions: int
    latent_map: int  # test images in the map of the codes (genctl.eval.pictures)
    val_batch_size: int
    val_images: int | None  # the first images of the validation split that pick best.pt (None: all of them)
    test_at_end: bool
    precision: Literal[32, "bf16", "fp16", "auto"]
    skip_nonfinite: bool
    compile: bool
    ema: float | None
    keep_best_at: list[float]  # minutes on trainer.clock

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_samples", "num_reconstructions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: no such grid), got {getattr(self, name)}")
        if self.val_images is not None and self.val_images < 1:
            raise ValueError(f"val_images must be >= 1 (null: the whole validation split), got {self.val_images}")
        if self.latent_map < 0:
            raise ValueError(f"latent_map is a number of test images and must be >= 0 (0: no map), got {self.latent_map}")
        check_seed(self.seed)
        if not self.grad_clip >= 0:  # as the checks of ema and max_time: NaN fails it too
            raise ValueError(f"grad_clip is a gradient norm and must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay and must be in [0, 1), e.g. 0.999 (0 or null: no average), got {self.ema}")
        for name in ("val_every", "ckpt_every", "sample_every"):
            try:
                Every.parse(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from e
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time is in minutes and must be > 0, got {self.max_time}")
        if list(self.keep_best_at) != sorted(set(self.keep_best_at)) or any(not m > 0 for m in self.keep_best_at):
            raise ValueError(f"keep_best_at is minutes of training, each > 0 and increasing, got {list(self.keep_best_at)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


def trainer_options(cfg: DictConfig) -> TrainerOptions:
    return build("trainer", TrainerOptions, cfg.trainer)


def build_step(
    opts: TrainerOptions, model: GenerativeModel, loss_fn: Loss, optimizer: torch.optim.Optimizer, device: torch.device
) -> TrainStep:
    """The training step as configured: mixed precision, DistributedDataParallel across ranks,
    torch.compile (of the training step only: evaluation and sampling run the plain model)."""
    if opts.precision == "fp16" and device.type != "cuda":
        raise GenctlError(f"trainer.precision=fp16 needs a CUDA device (this run is on {device}); use bf16, 32 or auto")
    precision = resolve_precision(opts.precision, device, model.bf16_gains_on)
    loss_step: torch.nn.Module = LossStep(model, loss_fn)
    if distributed.world_size() > 1:  # rank 0's initial weights are broadcast; gradients are averaged
        loss_step = DistributedDataParallel(loss_step, device_ids=[device] if device.type == "cuda" else None)
        # each rank its own stream (posterior noise), never another run's whose seed is a few apart
        torch.manual_seed(opts.seed + SEED_STRIDE * distributed.rank())
    if opts.compile:
        loss_step = torch.compile(loss_step)
    return TrainStep(
        loss_step=loss_step,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=precision.name == "fp16"),
        parameters=list(model.parameters()),
        grad_clip=opts.grad_clip,
        precision=precision,
        device_type=device.type,
        skip_nonfinite=opts.skip_nonfinite,
        ema=EMA(model, opts.ema) if opts.ema else None,  # after DistributedDataParallel broadcast rank 0's weights
    )


def build_trainer(cfg: DictConfig, run_dir: Path, hooks: list[Hook] | None = None) -> tuple[Trainer, Report | None]:
    """Everything ``cfg`` describes, built and resumed where ``cfg.resume`` says, and the report that
    follows the loop (rank 0 with genctl's own hooks; None otherwise). Rank 0 gets ``hooks``, by
    default the progress bar, history, log lines and the loggers of ``cfg.logger`` (TensorBoard,
    MLflow, W&B)."""
    opts = trainer_options(cfg)
    if "fid" in cfg.eval.metrics:  # said before any data is read, not silently left out at the end
        raise GenctlError(
            "training's final test measures the likelihood only; for sample quality run "
            "genctl eval ckpt=RUN eval.metrics=[nll,fid] after training"
        )
    loggers = chosen_loggers(cfg.logger, cfg.tracking) if hooks is None else []
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    device = distributed.local_device(resolve_device(opts.device))
    if opts.batch_size % world:
        raise GenctlError(f"trainer.batch_size={opts.batch_size} is the global batch: make it divisible by {world} processes")
    seed_everything(opts.seed)
    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data.shape, data.binary).to(device)
    check_fits(opts.num_samples, 4 * math.prod(data.shape), "trainer.num_samples", "the images of the sample grid")
    loss_fn = build_loss(cfg.loss, model, str(cfg.model.name))
    optimizer = build_optimizer(cfg.optim, model.parameters())
    lr = build_schedule(cfg.optim, optimizer)
    step = build_step(opts, model, loss_fn, optimizer, device)
    # labels travel with the images only to class-conditional models
    labels = dict.fromkeys(data.labels)
    if is_conditional(model):
        labels = {split: t.to(device) for split, t in data.labels.items()}
        classes = int(data.labels["train"].max()) + 1
        if classes > model.num_classes:
            raise GenctlError(f"the dataset has {classes} classes but model.num_classes={model.num_classes}")
    images, dynamic = data.train_source()
    batches = Batches(
        images.to(device),
        opts.batch_size,
        shuffle=True,
        dynamic_binarize=dynamic,
        generator=torch.Generator(device).manual_seed(opts.seed),
        labels=labels["train"],
        shard=(rank, world),
    )
    scored = model if step.ema is None else step.ema.model  # what validation, image grids and the test use
    picks = slice(opts.val_images)  # the first val_images validation images (all with null)
    val_labels = None if labels["val"] is None else labels["val"][picks]
    val = Validation(scored, data.fixed("val")[picks].to(device), val_labels, opts.val_batch_size, opts.seed)
    schedule = Schedule(
        epochs=opts.epochs,
        log_every=opts.log_every,
        val_every=Every.parse(opts.val_every),
        ckpt_every=Every.parse(opts.ckpt_every),
        sample_every=Every.parse(opts.sample_every),
        max_steps=opts.max_steps,
        max_seconds=opts.max_time * 60 if opts.max_time else None,
        clock=opts.clock,
        marks=tuple(60 * m for m in opts.keep_best_at),
    )
    meta = {"config": OmegaConf.to_container(cfg, resolve=True), "data_shape": list(data.shape), "binary": data.binary}
    report = None
    if hooks is None:
        grids = ImageGrids(scored, val.x, val.labels, opts.num_samples, opts.num_reconstructions, opts.seed)
        test = build("eval", EvalOptions, cfg.eval) if opts.test_at_end else None
        latent_map = (opts.latent_map, opts.val_batch_size)
        report = Report(run_dir, str(cfg.model.name), data, labels["test"], grids, device, test, latent_map)
        folder = RunFolder(run_dir)
        hooks = [ProgressBar(), History(folder.history), EpochLog(), LatentUnits(val)]
        hooks += [TensorBoard(folder.tensorboard, grids)] if "tensorboard" in loggers else []
        hooks += trackers(loggers, cfg.tracking, meta["config"], run_dir, grids)
    trainer = Trainer(model, loss_fn, step, batches, lr, val, schedule, run_dir, meta, hooks if rank == 0 else [])
    resume = cfg.resume or RunFolder(run_dir).restart_checkpoint()
    if resume:
        trainer.resume(resolve_checkpoint(resume, prefer=LAST))
    log.info(
        "model %s (%s parameters) on %s, precision %s: %d train / %d val / %d test images %s, binarize=%s",
        cfg.model.name,
        f"{sum(p.numel() for p in model.parameters()):,}",
        device,
        trainer.step.precision,
        len(data.train),
        len(data.val),
        len(data.test),
        "x".join(map(str, data.shape)),
        data.binarize,
    )
    return trainer, report if rank == 0 else None


def train(cfg: DictConfig, run_dir: Path) -> Progress:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints, logs, samples and metrics.json.

    Ctrl-C during training stops the loop cleanly (it saves last.pt); outside the loop, while the
    run starts or after it trained (the final test), it is a ``KeyboardInterrupt`` saying what the
    run folder holds. Under torchrun the processes leave together once rank 0's report is written,
    after the trainer (and the process group it holds) is gone."""
    completed = False
    try:
        progress = _fit(cfg, run_dir)
        completed = True
        return progress
    finally:
        distributed.finish(completed)


def _fit(cfg: DictConfig, run_dir: Path) -> Progress:
    trainer, start = None, 0
    try:
        with distributed.lost_peers_in_one_line():
            trainer, report = build_trainer(cfg, run_dir)
            start = trainer.progress.step
            stop, train_means = trainer.fit()
            if report is not None:
                report.run(trainer, stop, train_means)
            trainer.emit("on_train_end", stop, train_means)
            return trainer.progress
    except BaseException as e:
        if trainer is not None:
            trainer.emit("on_failure", e)  # the trackers mark their run failed, or killed
        if not isinstance(e, KeyboardInterrupt):
            raise
        if trainer is not None and trainer.progress.step > start:
            raise KeyboardInterrupt(
                f"interrupted after training, before its report was written: the checkpoints in {run_dir} are complete; "
                f"test best.pt with: genctl eval ckpt={run_dir}"
            ) from None
        if cfg.resume:
            raise KeyboardInterrupt(
                f"interrupted during start-up, before the first step: {cfg.resume} is as it was; "
                f"continue with: genctl train resume={cfg.resume}"
            ) from None
        raise KeyboardInterrupt(f"interrupted during start-up, before the first step: nothing was trained in {run_dir}") from None
