"""``genctl train``: compose ``configs/train.yaml`` with the overrides and run the training loop."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.cli.logs import route_console_through_tqdm
from genctl.config import config_dir
from genctl.train.build import train

log = logging.getLogger("genctl")


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
@exit_on_user_error("train")
def main(cfg: DictConfig) -> float:
    route_console_through_tqdm()
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    log.info("run folder: %s", run_dir)
    progress = train(cfg, run_dir)
    log.info(
        "done: checkpoints, samples, TensorBoard logs (tensorboard --logdir %s) and metrics.json in %s", run_dir / "tb", run_dir
    )
    return float(progress.best_val)  # what sweepers minimize
