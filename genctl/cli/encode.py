"""``genctl encode ckpt=RUN|EXPORT [split=test] [out=FILE]``: a latent model's codes of a split as
safetensors (:mod:`genctl.eval.encoding`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import config_dir, hydra_version_base
from genctl.eval.encoding import encode_checkpoint


@hydra.main(config_path=str(config_dir()), config_name="encode", **hydra_version_base())
@exit_on_user_error("encode")
def main(cfg: DictConfig) -> None:
    encode_checkpoint(cfg)
