"""``genctl eval ckpt=PATH``: test-set likelihood and sample quality of a checkpoint, merged into its
metrics.json (:mod:`genctl.eval.checkpoint`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import config_dir, hydra_version_base
from genctl.eval.checkpoint import evaluate_checkpoint


@hydra.main(config_path=str(config_dir()), config_name="eval", **hydra_version_base())
@exit_on_user_error("eval")
def main(cfg: DictConfig) -> None:
    evaluate_checkpoint(cfg)
