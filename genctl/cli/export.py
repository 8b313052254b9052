"""``genctl export ckpt=RUN [out=DIR]``: a run's model as safetensors weights, config and model card
(:mod:`genctl.runs.export`), which ``genctl.load``, ``genctl eval`` and ``genctl sample`` read without pickle."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import build, config_dir, hydra_version_base
from genctl.runs.export import export_checkpoint

log = logging.getLogger("genctl")


@dataclass(frozen=True)
class ExportOptions:
    """``configs/export.yaml``'s keys besides ``ckpt``, checked."""

    out: str | None
    overwrite: bool


@hydra.main(config_path=str(config_dir()), config_name="export", **hydra_version_base())
@exit_on_user_error("export")
def main(cfg: DictConfig) -> None:
    opts = build("export", ExportOptions, {key: cfg[key] for key in ExportOptions.__dataclass_fields__})
    done = export_checkpoint(str(cfg.ckpt), opts.out, opts.overwrite)
    log.info(done.summary())
    if done.nll is None:
        log.info("no test NLL in the run's metrics.json for the card: genctl eval ckpt=%s adds one there", done.folder)
    else:
        log.info("the card's test NLL: %.2f nats (%s)", done.nll.nats, done.nll.estimator)
