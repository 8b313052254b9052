"""``genctl sample ckpt=PATH n=64``: prior samples, reconstructions, latent interpolations and
traversals, completions, or a map of the test codes by class (:mod:`genctl.eval.sampling`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import config_dir, hydra_version_base
from genctl.eval.sampling import sample_checkpoint


@hydra.main(config_path=str(config_dir()), config_name="sample", **hydra_version_base())
@exit_on_user_error("sample")
def main(cfg: DictConfig) -> None:
    sample_checkpoint(cfg)
