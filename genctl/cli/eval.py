"""``genctl eval ckpt=PATH``: test-set likelihood of a checkpoint, merged into its metrics.json.

It files the result as ``<split>@<checkpoint>`` (e.g. ``test@best.pt``), beside the test that
training writes when it ends, so evaluating a run while it trains loses neither."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from genctl.cli.errors import exit_on_user_error
from genctl.config import build, config_dir, hydra_version_base
from genctl.data import load_dataset
from genctl.eval.evaluate import EvalOptions, evaluate
from genctl.eval.report import describe, summarize
from genctl.models.base import is_conditional
from genctl.runs.checkpoint import open_checkpoint
from genctl.runs.record import Evaluation, RunRecord, evaluation_name

log = logging.getLogger("genctl")


@hydra.main(config_path=str(config_dir()), config_name="eval", **hydra_version_base())
@exit_on_user_error("eval")
def main(cfg: DictConfig) -> None:
    e = build("eval", EvalOptions, cfg.eval)
    path, state, model, train_cfg = open_checkpoint(cfg)
    data = load_dataset(train_cfg.dataset)
    x = data.fixed(e.split)
    labels = data.labels[e.split] if is_conditional(model) else None
    means = evaluate(model, x, e.batch_size, e.k, e.chunk, e.seed, progress=True, labels=labels)
    metrics = describe(means, model, e.k)
    progress = state.get("progress")
    step = progress.get("step") if isinstance(progress, dict) else None  # absent from checkpoints not written by training
    about = f"{data.protocol}; {e.split} split, checkpoint {path.name}"
    about += f" at step {step}" if step is not None else ""
    name = evaluation_name(e.split, path.name)
    record = RunRecord.read(path.parent, missing_ok=True)
    record.evaluations[name] = Evaluation(metrics, about)
    out = record.write(path.parent)
    log.info("%s: %s", about, summarize(metrics))
    log.info("written to %s as %s", out, name)
