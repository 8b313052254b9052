"""``genctl train``: compose ``configs/train.yaml`` with the overrides and run the training loop."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error, full_error
from genctl.config import config_dir, error_line, hydra_version_base
from genctl.runs.folder import RunFolder
from genctl.runs.record import record_error
from genctl.train.build import train
from genctl.train.logs import route_console_through_tqdm

log = logging.getLogger("genctl")


@hydra.main(config_path=str(config_dir()), config_name="train", **hydra_version_base())
@exit_on_user_error("train")
def main(cfg: DictConfig) -> float:
    route_console_through_tqdm()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    log.info("run folder: %s", run_dir)
    try:
        progress = train(cfg, run_dir)
    except Exception as e:
        if hydra_cfg.mode != RunMode.MULTIRUN or getattr(e, "exit_code", 2) == 130:
            raise  # a single run: one line and exit code 2 for a user error, the traceback for a bug; Ctrl-C ends a sweep
        return job_failed(run_dir, e)
    logs = f"TensorBoard logs (tensorboard --logdir {RunFolder(run_dir).tensorboard}) and " if "tensorboard" in cfg.logger else ""
    log.info("done: checkpoints, samples, %smetrics.json in %s", logs, run_dir)
    return float(progress.best_val)  # what sweepers minimize


def job_failed(run_dir: Path, e: Exception) -> float:
    """Record why a sweep job failed and let the sweep go on (Hydra's sweepers stop at a job that
    raises, before the sweep's summary is written). The summary lists the failure and sets the
    sweep's exit code; the job returns the worst value a minimizing sweeper can get."""
    line = error_line(e)
    if line is None:  # a bug, not the user's input
        message = " ".join(str(e).split())
        line = f"{type(e).__name__}: {message}" if message else type(e).__name__
    log.error("job failed: %s", line, exc_info=full_error())
    record_error(run_dir, line)
    return float("inf")
