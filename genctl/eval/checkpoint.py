"""What ``genctl eval ckpt=PATH`` does: test-set likelihood and sample quality of a checkpoint, merged into its metrics.json.

It files the likelihood as ``<split>@<checkpoint>`` (e.g. ``test@best.pt``), beside the test that
training writes when it ends, so evaluating a run while it trains loses neither; with
``eval.metrics=[nll,fid]`` the sample quality (classifier-feature FID, precision, recall:
``genctl.eval.quality``) goes beside it as ``sample_quality_<split>@<checkpoint>``. A latent model's
likelihood comes with its active units and KL per latent unit (``genctl.eval.latent``); with
``eval.metrics=[probe]`` a linear probe's accuracy on its codes is filed as ``probe_<split>@<checkpoint>``.

Everything that could refuse the evaluation is checked before any of it runs (the settings'
sizes against the machine's memory, whether the model can draw samples and the classifier can
read its images), and each metric is written as soon as it is measured: a sample-quality run
that fails or is killed keeps the likelihood measured before it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from genctl import distributed
from genctl.config import build
from genctl.data import DataSplits, load_dataset
from genctl.errors import GenctlError
from genctl.eval.evaluate import EvalOptions, check_memory
from genctl.eval.features import FeatureExtractor, feature_extractor
from genctl.eval.latent import check_encodes, check_labelled, codes, probe
from genctl.eval.quality import check_memory as check_samples_memory
from genctl.eval.quality import quality_line, quality_name, sample_quality
from genctl.eval.report import metrics_line
from genctl.eval.score import score
from genctl.models.base import Encodes, GenerativeModel, Sampler, is_conditional
from genctl.runs.atomic import check_writable
from genctl.runs.checkpoint import open_checkpoint
from genctl.runs.folder import RunFolder
from genctl.runs.record import Evaluation, RunRecord, evaluation_name

log = logging.getLogger("genctl")


def evaluate_checkpoint(cfg: DictConfig) -> None:
    """``genctl eval``'s work on its composed config (``configs/eval.yaml``): score ``cfg.ckpt`` and
    file each metric in the record beside it."""
    e = build("eval", EvalOptions, cfg.eval)
    distributed.init()  # under torchrun every process scores its share of the batches; rank 0 reports
    rank, world = distributed.rank(), distributed.world_size()
    path, state, model, train_cfg = open_checkpoint(cfg)
    check_writable(
        RunFolder(path.parent).record, "the evaluation", "copy the run or export folder somewhere writable and evaluate it there"
    )  # said before the evaluation's minutes are spent, not after them
    check_memory(e, model)
    model_name = str(train_cfg.model.name)
    if "probe" in e.metrics:
        check_encodes(model, model_name, "the linear probe (eval.metrics=[probe])")
    extractor = quality_extractor(model, model_name, str(train_cfg.dataset.name), e) if "fid" in e.metrics else None
    data = load_dataset(train_cfg.dataset)
    if "probe" in e.metrics:
        check_labelled(data.labels["train"], data.name)
    x = data.fixed(e.split)
    progress = state.get("progress")
    step = progress.get("step") if isinstance(progress, dict) else None  # absent from checkpoints not written by training
    about = f"{data.protocol}; {e.split} split, checkpoint {path.name}"
    about += f" at step {step}" if step is not None else ""
    encoded = isinstance(model, Encodes) and ("nll" in e.metrics or "probe" in e.metrics) and rank == 0
    split_codes = codes(model, x, e.batch_size, data.labels[e.split]) if encoded else None
    evaluation = None
    if "nll" in e.metrics:
        labels = data.labels[e.split] if is_conditional(model) else None
        evaluation = score(model, x, e, about, labels, split_codes, shard=(rank, world), progress=True)
    distributed.finish(completed=True)  # no collective follows: the processes leave the group together
    if rank > 0:  # rank 0 writes the record, and draws the samples that sample quality needs
        return
    if evaluation is not None:
        file(path, evaluation_name(e.split, path.name), evaluation, metrics_line(evaluation.metrics))
        if "kl_per_unit" in evaluation.metrics:
            log.info("KL per latent unit (nats): %s", " ".join(f"{v:.2f}" for v in evaluation.metrics["kl_per_unit"]))
    if "probe" in e.metrics and split_codes is not None:
        found = linear_probe(model, data, e, split_codes[0])
        seen = f"logistic regression on {found['probe_train_images']} train codes, {e.probe_steps} L-BFGS iterations"
        file(path, evaluation_name(f"probe_{e.split}", path.name), Evaluation(found, f"{about}; {seen}"), metrics_line(found))
    if extractor is not None:
        metrics = sample_quality(model, x, extractor, e.num_samples, e.seed, e.batch_size, progress=True)
        seen = f"{metrics['n_fake']} samples (seed {e.seed}) against {metrics['n_real']} {e.split} images"
        file(path, quality_name(e.split, path.name), Evaluation(metrics, f"{about}; {seen}"), quality_line(metrics))


def quality_extractor(model: GenerativeModel, name: str, dataset: str, e: EvalOptions) -> FeatureExtractor:
    """The classifier whose features score ``model``'s samples, once everything that would refuse
    sample quality was checked: the model draws samples, a classifier ships for ``dataset`` and
    reads the model's images, and ``e.num_samples`` of them fit in memory."""
    if not isinstance(model, Sampler):
        raise GenctlError(f"model '{name}' cannot draw samples, so eval.metrics cannot hold fid; use eval.metrics=[nll]")
    extractor = feature_extractor(dataset)
    extractor.check(model.data_shape, fix="sample quality (fid) cannot be measured for this model; use eval.metrics=[nll]")
    check_samples_memory(e.num_samples, model.data_shape, extractor)
    return extractor


def linear_probe(model: GenerativeModel, data: DataSplits, e: EvalOptions, means: torch.Tensor) -> dict[str, Any]:
    """Accuracy on ``e.split`` (whose posterior means are ``means``) of a linear classifier fit to
    the train split's, and the share of the split's most frequent class: what guessing scores."""
    train = means if e.split == "train" else codes(model, data.fixed("train"), e.batch_size, data.labels["train"])[0]
    labels = data.labels[e.split]
    accuracy = probe(train, data.labels["train"], means, labels, e.probe_steps, e.seed)
    chance = float(torch.bincount(labels).max()) / len(labels)
    return {"probe_accuracy": accuracy, "probe_chance": chance, "probe_train_images": len(train)}


def file(checkpoint: Path, name: str, evaluation: Evaluation, line: str) -> None:
    """Write one evaluation into the record beside ``checkpoint`` as soon as it is measured, so a
    later metric that fails or is killed does not take it along. The record is read anew each
    time: training may have written it meanwhile."""
    record = RunRecord.read(checkpoint.parent, missing_ok=True)
    record.evaluations[name] = evaluation
    out = record.write(checkpoint.parent)
    log.info("%s: %s", evaluation.about, line)
    log.info("written to %s as %s", out, name)
