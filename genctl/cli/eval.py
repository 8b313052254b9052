"""``genctl eval ckpt=PATH``: test-set likelihood and sample quality of a checkpoint, merged into its metrics.json.

It files the likelihood as ``<split>@<checkpoint>`` (e.g. ``test@best.pt``), beside the test that
training writes when it ends, so evaluating a run while it trains loses neither; with
``eval.metrics=[nll,fid]`` the sample quality (classifier-feature FID, precision, recall:
``genctl.eval.quality``) goes beside it as ``sample_quality_<split>@<checkpoint>``."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from genctl import distributed
from genctl.cli.errors import exit_on_user_error
from genctl.config import build, config_dir, hydra_version_base
from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import EvalOptions, evaluate
from genctl.eval.features import feature_extractor
from genctl.eval.quality import quality_name, sample_quality
from genctl.eval.quality import summarize as summarize_quality
from genctl.eval.report import describe, summarize
from genctl.models.base import Sampler, is_conditional
from genctl.runs.checkpoint import open_checkpoint
from genctl.runs.record import Evaluation, RunRecord, evaluation_name

log = logging.getLogger("genctl")


@hydra.main(config_path=str(config_dir()), config_name="eval", **hydra_version_base())
@exit_on_user_error("eval")
def main(cfg: DictConfig) -> None:
    e = build("eval", EvalOptions, cfg.eval)
    distributed.init()  # under torchrun every process scores its share of the batches; rank 0 reports
    rank, world = distributed.rank(), distributed.world_size()
    path, state, model, train_cfg = open_checkpoint(cfg)
    if "fid" in e.metrics:  # refused before the likelihood's minutes are spent
        if not isinstance(model, Sampler):
            raise GenctlError(
                f"model '{train_cfg.model.name}' cannot draw samples, so eval.metrics cannot hold fid; use eval.metrics=[nll]"
            )
        extractor = feature_extractor(str(train_cfg.dataset.name))
    data = load_dataset(train_cfg.dataset)
    x = data.fixed(e.split)
    progress = state.get("progress")
    step = progress.get("step") if isinstance(progress, dict) else None  # absent from checkpoints not written by training
    about = f"{data.protocol}; {e.split} split, checkpoint {path.name}"
    about += f" at step {step}" if step is not None else ""
    filed: dict[str, tuple[Evaluation, str]] = {}
    if "nll" in e.metrics:
        labels = data.labels[e.split] if is_conditional(model) else None
        shard = (rank, world)
        share = evaluate(
            model, x, e.batch_size, e.k, e.chunk, e.seed, progress=rank == 0, labels=labels, shard=shard, compile=e.compile
        )
        with distributed.lost_peers_in_one_line():
            shares = distributed.gather(share)
        means = {name: sum(part[name] for part in shares) for name in share}
        metrics = describe(means, model, e.k)
        filed[evaluation_name(e.split, path.name)] = Evaluation(metrics, about), summarize(metrics)
    distributed.finish(completed=True)  # no collective follows: the processes leave the group together
    if rank > 0:  # rank 0 draws the samples that sample quality needs, and writes the record
        return
    if "fid" in e.metrics:
        metrics = sample_quality(model, x, extractor, e.num_samples, e.seed, e.batch_size, progress=True)
        seen = f"{metrics['n_fake']} samples (seed {e.seed}) against {metrics['n_real']} {e.split} images"
        filed[quality_name(e.split, path.name)] = Evaluation(metrics, f"{about}; {seen}"), summarize_quality(metrics)
    record = RunRecord.read(path.parent, missing_ok=True)  # read last: training may have written it meanwhile
    record.evaluations.update({name: evaluation for name, (evaluation, _) in filed.items()})
    out = record.write(path.parent)
    for name, (evaluation, line) in filed.items():
        log.info("%s: %s", evaluation.about, line)
        log.info("written to %s as %s", out, name)
