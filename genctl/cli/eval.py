"""``genctl eval ckpt=PATH``: test-set likelihood of a checkpoint, merged into its metrics.json."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from genctl.cli.errors import exit_on_user_error
from genctl.config import config_dir
from genctl.data import load_dataset
from genctl.eval.evaluate import evaluate
from genctl.eval.report import describe, summarize
from genctl.models.base import is_conditional
from genctl.runtime import resolve_device
from genctl.train.checkpoint import load_checkpoint, resolve_checkpoint, restore_model

log = logging.getLogger("genctl")


def open_checkpoint(cfg: DictConfig):
    """(checkpoint path, state, model on its device, the training config) for eval and sample."""
    device = resolve_device(str(cfg.device))
    path = resolve_checkpoint(cfg.ckpt, prefer="best.pt")
    state = load_checkpoint(path)
    model = restore_model(state, path).to(device)
    train_cfg = OmegaConf.create(state["config"])
    if cfg.data_root is not None:
        train_cfg.dataset.root = str(cfg.data_root)
    return path, state, model, train_cfg


@hydra.main(config_path=str(config_dir()), config_name="eval", version_base="1.3")
@exit_on_user_error("eval")
def main(cfg: DictConfig) -> None:
    path, state, model, train_cfg = open_checkpoint(cfg)
    data = load_dataset(train_cfg.dataset)
    e = cfg.eval
    x = data.fixed(str(e.split))
    labels = data.labels[str(e.split)] if is_conditional(model) else None
    means = evaluate(model, x, int(e.batch_size), int(e.k), int(e.chunk), int(e.seed), progress=True, labels=labels)
    metrics = describe(means, model, int(e.k))
    out = path.parent / "metrics.json"
    record = json.loads(out.read_text()) if out.is_file() else {}
    record[str(e.split)] = metrics
    record[f"{e.split}_split"] = f"{data.name} {e.split} ({len(x)} images, binarize={data.binarize}), checkpoint {path.name}"
    out.write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s %s (%d images, binarize=%s), %s: %s", data.name, e.split, len(x), data.binarize, path, summarize(metrics))
    log.info("written to %s", out)
