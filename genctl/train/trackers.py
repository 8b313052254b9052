"""Experiment trackers beside TensorBoard, chosen by ``logger=[tensorboard,mlflow]`` / ``[tensorboard,wandb]``.

MLflow and Weights & Biases get what TensorBoard gets (every scalar at its training step, the
image grids when due) and what a tracker's run table needs besides: the resolved config as
parameters, and at the end the run folder's final grids and ``metrics.json`` as files. Their
packages are optional (``pip install 'genctl[track]'``): :func:`chosen_loggers` only checks that
they are installed, before anything is loaded, and a tracker imports its package when training
begins, on rank 0 (the only rank with hooks), so genctl starts as fast without them.

A tracker's run ends with training: finished after the final test, or marked failed (killed, for
a Ctrl-C or a signal) when training ends with an error, so a sweep's next job does not find it open.

A tracker is a guest of the training it records: once its run is open, a call into its package
that raises (a server gone, an HTTP 400, W&B's service killed) or does not answer within
:data:`CALL_TIMEOUT_S` is one warning line, the tracker is switched off, and training goes on
writing its checkpoints and its record. MLflow's own retries are bounded too (:data:`MLFLOW_HTTP`):
by default it retries a request for minutes before it gives up.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig

from genctl.config import build, plain
from genctl.errors import GenctlError
from genctl.images import make_grid
from genctl.runs.folder import RunFolder
from genctl.runs.record import RunRecord
from genctl.train.hooks import Hook, ImageGrids, Training

log = logging.getLogger("genctl")

LOGGERS = ("tensorboard", "mlflow", "wandb")
INSTALL = "pip install 'genctl[track]'"
# URI schemes of the tracking stores MLflow keeps in a database (through SQLAlchemy and alembic)
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limit on the parameters of one log_batch
# Seconds a call into a tracker's package may take before the tracker is switched off (its thread
# is left to finish or hang on its own): longer than MLflow's bounded retries below take.
CALL_TIMEOUT_S = 60.0
# MLflow's HTTP settings for genctl's calls, where the environment does not set them: 2 retries,
# 1 s backoff, 15 s per request (about 50 s at worst), instead of its default minutes of retries.
MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


@dataclass(frozen=True)
class MLflowOptions:
    """``tracking.mlflow`` in configs/train.yaml, which holds the defaults."""

    tracking_uri: str
    experiment: str


@dataclass(frozen=True)
class WandbOptions:
    """``tracking.wandb`` in configs/train.yaml, which holds the defaults: arguments of ``wandb.init``."""

    project: str
    entity: str | None
    mode: Literal["offline", "online", "disabled"]
    dir: str


def chosen_loggers(logger: Any, tracking: DictConfig) -> list[str]:
    """``logger`` checked before anything is loaded: known names, their options, their packages installed."""
    names = plain(logger)
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise GenctlError(f"logger={names} is not a list of logger names; e.g. logger=[tensorboard,mlflow]")
    for name in names:
        if name not in LOGGERS:
            raise GenctlError(f"unknown logger '{name}'; choose from: {', '.join(LOGGERS)} (e.g. logger=[tensorboard,mlflow])")
        if name in TRACKERS:
            TRACKERS[name].check(tracking)
    return list(dict.fromkeys(names))


def trackers(names: list[str], tracking: DictConfig, config: dict[str, Any], run_dir: Path, grids: ImageGrids) -> list[Hook]:
    """The tracker hooks of ``names`` (the checked ``logger`` list); TensorBoard is not one of them.
    They record ``config`` without ``tracking``: a server's address may hold credentials."""
    config = {key: value for key, value in config.items() if key != "tracking"}
    return [TRACKERS[name](tracking, config, run_dir, grids) for name in names if name in TRACKERS]


def _require(module: str, logger: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise GenctlError(f"logger={logger} needs the {module} package, which is not installed: {INSTALL}")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"latent_dim": 4}}`` -> ``{"model.latent_dim": "4"}``: a tracker's parameters are
    flat strings; values other than strings are written as in JSON (``[32]``, ``null``, ``true``)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def grid_image(images: torch.Tensor) -> np.ndarray:
    """A batch as one tiled uint8 image, [H, W] for one channel, else [H, W, C]."""
    array = (make_grid(images).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


def within(seconds: float, call: Callable[[], None]) -> str | None:
    """Run ``call`` in a daemon thread and wait for it at most ``seconds``: None when it returned,
    else what went wrong, in one line. A call that does not return is left to its thread, which
    does not keep the process from exiting."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - whatever a tracker's package raises is reported, not raised
            raised.append(e)

    thread = threading.Thread(target=run, name="genctl-tracker", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return f"no answer after {seconds:g} s"
    if not raised:
        return None
    text = " ".join(str(raised[0]).split())[:300]
    return f"{type(raised[0]).__name__}: {text}" if text else type(raised[0]).__name__


class Tracker(Hook, ABC):
    """What the trackers share: a run opened when training begins, named after the run folder;
    scalars as ``<split>/<name>`` at the training step; the grids when due; the final files and
    the close. A subclass says how its package does each of these.

    Every call after the run is opened goes through :meth:`guarded`; ``start`` does not: a tracker
    that cannot open its run (a wrong address, no API key) stops training before it begins."""

    title = "tracker"  # the name in messages

    def __init__(self, config: dict[str, Any], run_dir: Path, grids: ImageGrids) -> None:
        self.config, self.run_dir, self.grids = config, run_dir, grids
        self.open = False
        self.off = False  # switched off after a call failed: training goes on without it

    @property
    def run_name(self) -> str:
        """The run folder, relative to the working directory where it is inside it (``runs/vae/<stamp>``)."""
        here = Path.cwd().resolve()
        return str(self.run_dir.relative_to(here)) if self.run_dir.is_relative_to(here) else str(self.run_dir)

    def guarded(self, doing: str, call: Callable[[], None]) -> None:
        """Make one call into the tracker's package (``doing``: what it is, for the message) so that
        it can neither stop nor stall training: one that raises or does not answer within
        :data:`CALL_TIMEOUT_S` switches the tracker off, with one warning line. Once off, nothing is called."""
        if self.off:
            return
        problem = within(CALL_TIMEOUT_S, call)
        if problem is None:
            return
        self.off = True
        log.warning(
            "%s stopped working while %s (%s): switched off for the rest of this run; training continues "
            "and writes its checkpoints and metrics.json as before",
            self.title,
            doing,
            problem,
        )

    def on_train_begin(self, trainer: Training) -> None:
        self.start()
        self.open = True
        self.guarded("recording the config", self.log_config)

    def on_scalars(self, trainer: Training, split: str, values: dict[str, float]) -> None:
        step = trainer.progress.step
        scalars = {f"{split}/{name}": float(value) for name, value in values.items()}
        self.guarded(f"logging {split} scalars at step {step}", lambda: self.log_scalars(scalars, step))

    def on_images(self, trainer: Training) -> None:
        if self.off:  # drawing the grids is the model's work: none for a tracker that is off
            return
        step = trainer.progress.step
        images = {name: grid_image(grid) for name, grid in self.grids.at_step(step).items()}
        self.guarded(f"logging images at step {step}", lambda: self.log_images(images, step))

    def on_train_end(self, trainer: Training, stop: str, train_means: dict[str, float]) -> None:
        """After the report (earlier in the hook list): its grids of best.pt and the record, as files."""
        images = RunRecord.read(self.run_dir, missing_ok=True).images
        paths = [Path(p) for p in images if Path(p).is_file()] + [RunFolder(self.run_dir).record]
        self.guarded("saving the run's files", lambda: self.log_files(paths))
        self.guarded("closing the run", lambda: self.close(None))
        self.open = False

    def on_failure(self, trainer: Training, error: BaseException) -> None:
        """Mark the run failed; a tracker that cannot is one warning line: the error that ended
        training is the one to report."""
        if not self.open:
            return
        self.open = False
        self.guarded("marking the run failed", lambda: self.close(error))

    @staticmethod
    def killed(error: BaseException) -> bool:
        """Whether ``error`` is a Ctrl-C or a signal (exit code 130) rather than a failure."""
        return isinstance(error, KeyboardInterrupt) or getattr(error, "exit_code", None) == 130

    @classmethod
    @abstractmethod
    def check(cls, tracking: DictConfig) -> None:
        """Raise a one-line error if the options are not valid or the package is missing."""

    @abstractmethod
    def start(self) -> None:
        """Open the run (one line for a run that cannot be opened)."""

    def log_config(self) -> None:
        """Record the config, where opening the run did not."""

    @abstractmethod
    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def log_images(self, images: dict[str, np.ndarray], step: int) -> None: ...

    @abstractmethod
    def log_files(self, paths: list[Path]) -> None: ...

    @abstractmethod
    def close(self, error: BaseException | None) -> None:
        """End the run: finished (``error`` None), killed or failed."""


class MLflow(Tracker):
    """An MLflow run in ``tracking.mlflow.experiment``: metrics, the config as flat parameters,
    the grids as step images and the final files as artifacts. Through ``MlflowClient``, not
    the fluent API's process-wide active run, which an in-process sweep's jobs would share."""

    title = "MLflow"

    def __init__(self, tracking: DictConfig, config: dict[str, Any], run_dir: Path, grids: ImageGrids) -> None:
        super().__init__(config, run_dir, grids)
        self.options = build("tracking.mlflow", MLflowOptions, tracking.mlflow)

    @classmethod
    def check(cls, tracking: DictConfig) -> None:
        options = build("tracking.mlflow", MLflowOptions, tracking.mlflow)
        _require("mlflow", "mlflow")
        if options.tracking_uri.split(":", 1)[0].split("+", 1)[0] in DATABASES:
            missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
            if missing:
                raise GenctlError(
                    f"tracking.mlflow.tracking_uri={options.tracking_uri} is a database store, which needs "
                    f"{' and '.join(missing)}: pip install {' '.join(missing)}, or give tracking.mlflow.tracking_uri "
                    "a server's http address"
                )

    def start(self) -> None:
        for variable, value in MLFLOW_HTTP.items():  # read by MLflow at every request
            os.environ.setdefault(variable, value)
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        uri, name = self.options.tracking_uri, self.options.experiment
        try:
            self.client = MlflowClient(uri)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run = self.client.create_run(experiment_id, run_name=self.run_name, tags={"genctl.run_dir": str(self.run_dir)})
        except MlflowException as e:
            raise GenctlError(f"tracking.mlflow.tracking_uri={uri}: {' '.join(str(e).split())}") from e
        self.run_id = run.info.run_id
        log.info("MLflow run %s in experiment '%s' at %s", self.run_id, name, uri)

    def log_config(self) -> None:
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in flatten(self.config).items()]
        for i in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_PARAMS_PER_CALL])

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for name, image in images.items():
            self.client.log_image(self.run_id, image, key=name, step=step)

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, error: BaseException | None) -> None:
        status = "FINISHED" if error is None else "KILLED" if self.killed(error) else "FAILED"
        self.client.set_terminated(self.run_id, status)


class Wandb(Tracker):
    """A W&B run in ``tracking.wandb.project`` (offline by default: ``wandb sync`` uploads it later):
    history at the training step, the resolved config as the run's config, grids as images, and
    the final files saved with the run."""

    title = "W&B"

    def __init__(self, tracking: DictConfig, config: dict[str, Any], run_dir: Path, grids: ImageGrids) -> None:
        super().__init__(config, run_dir, grids)
        self.options = build("tracking.wandb", WandbOptions, tracking.wandb)

    @classmethod
    def check(cls, tracking: DictConfig) -> None:
        build("tracking.wandb", WandbOptions, tracking.wandb)
        _require("wandb", "wandb")

    def start(self) -> None:
        import wandb

        Path(self.options.dir).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                **asdict(self.options),
                name=self.run_name,
                config=self.config,
                # a new run for every training of the process (an in-process sweep's jobs), never the last one's;
                # no console capture: genctl's own log is train.log in the run folder, and the progress bars
                # write to the streams W&B would wrap
                reinit="create_new",
                settings=wandb.Settings(console="off"),
            )
        except wandb.errors.Error as e:  # e.g. mode=online without an API key: wandb login, or mode=offline
            raise GenctlError(f"tracking.wandb (mode={self.options.mode}): {' '.join(str(e).split())}") from e

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        import wandb

        self.run.log({name: wandb.Image(image) for name, image in images.items()}, step=step)

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.run.save(glob.escape(str(path)), base_path=str(self.run_dir), policy="now")

    def close(self, error: BaseException | None) -> None:
        self.run.finish(exit_code=0 if error is None else 130 if self.killed(error) else 1)


TRACKERS: dict[str, type[Tracker]] = {"mlflow": MLflow, "wandb": Wandb}
