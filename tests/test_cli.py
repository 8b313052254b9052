"""The genctl command as users meet it: one-line errors, run folders, eval, sample, sweeps, resume."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genctl.data import load_dataset
from genctl.runs.checkpoint import load_checkpoint
from tests.conftest import TINY, one_line_error


def test_help_lists_subcommands_and_group_choices(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for word in (
        "train",
        "eval",
        "sample",
        "ae, fvsbn",
        "adam, rmsprop",
        "ar_nll, elbo, elbo_balanced, iwae, mse",
        "digits",
        "cifar10",
    ):
        assert word in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "model=vaee"], "unknown model 'vaee'; choose one of: ae, fvsbn, gated_pixelcnn, hvae, made, nade"),
        (["train", "optim=sgdd"], "unknown optim 'sgdd'; choose one of: adam, rmsprop"),
        (["train", "model.latnt_dim=3"], "latnt_dim"),
        (["train", "model.latent_dim=abc"], "latent_dim='abc' is not valid (expected int)"),
        (["train", "trainer.epochs=0"], "epochs must be >= 1"),
        (["train", "trainer.device=tpu"], "device=tpu is not one of"),
        (["train", "dataset=mnist", "dataset.root=/nonexistent"], "/nonexistent/MNIST/raw/train-images-idx3-ubyte"),
        (["train", "model=ae", "loss=elbo"], "loss 'elbo' needs one of the models hvae, vae"),
        (["train", "model=vae,ae"], "--multirun"),
        (["eval"], "ckpt"),
        (["eval", "ckpt=/nonexistent.pt"], "/nonexistent.pt does not exist"),
        (["bogus"], "unknown subcommand 'bogus'; choose one of: train, eval, sample"),
        (["train", "model.latent_dim=0"], "latent_dim must be >= 1, got 0"),
        (["train", "eval.k=0"], "eval: k must be >= 1, got 0"),
        (["sample", "ckpt=/x.pt", "n=abc"], "sample: n='abc' is not valid (expected int)"),
        (["sample", "ckpt=/x.pt", "temperature=abc"], "sample: temperature='abc' is not valid (expected float)"),
        (["eval", "ckpt=/x.pt", "eval.k=0"], "eval: k must be >= 1, got 0"),
        (["eval", "ckpt=/x.pt", "eval.batch_size=0"], "eval: batch_size must be >= 1, got 0"),
        (["eval", "ckpt=/x.pt", "eval.split=dev"], "eval: split='dev' is not valid (expected one of test, val, train)"),
    ],
)
def test_bad_input_is_one_actionable_line(cli, args, expected):
    code, _, err = cli(*args)
    assert expected in one_line_error(code, err)


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "genctl"
    result = subprocess.run([str(exe), "train", "model=nope"], capture_output=True, text=True, cwd=tmp_path)
    assert "unknown model 'nope'; choose one of: ae, fvsbn" in one_line_error(result.returncode, result.stderr)


def test_corrupt_and_foreign_checkpoints_are_refused_in_one_line(cli, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    code, _, err = cli("eval", f"ckpt={tmp_path / 'garbage.pt'}")
    assert "is corrupt or not a genctl checkpoint" in one_line_error(code, err)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    code, _, err = cli("eval", f"ckpt={tmp_path / 'foreign.pt'}")
    assert "is not a genctl checkpoint" in one_line_error(code, err)


def test_train_eval_sample_round_trip(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", *TINY, f"hydra.run.dir={run}")
    assert code == 0, err
    assert f"run folder: {run}" in out
    for name in ("best.pt", "last.pt", "metrics.json", "samples.png", "reconstructions.png", "train.log", ".hydra/config.yaml"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["nll_iwae"]["estimator"] == "IWAE bound, k=4"
    nll = {name: metrics["test"][name]["nats"] for name in ("nll_iwae", "nll_elbo")}
    assert 0 < nll["nll_elbo"] - nll["nll_iwae"] < 10, nll  # IWAE_4 is tighter than the ELBO, by a few nats
    assert nll["nll_iwae"] < 784 * math.log(2), nll  # one epoch already beats a uniform model
    state = load_checkpoint(run / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "progress", "config", "data", "genctl_version"} <= set(state)
    assert {"torch", "numpy", "python", "data"} <= set(state["rng"]) and state["progress"]["step"] > 0

    code, out, err = cli("eval", f"ckpt={run}", "eval.k=8", "eval.chunk=3")
    assert code == 0, err
    assert "nll_iwae" in out and "bits/dim" in out and "IWAE bound, k=8" in out
    assert json.loads((run / "metrics.json").read_text())["test@best.pt"]["nll_iwae"]["estimator"] == "IWAE bound, k=8"

    for mode, n, size in (("prior", 6, (3, 2)), ("reconstruct", 6, (3, 4)), ("interpolate", 8, (4, 2))):
        code, _, err = cli("sample", f"ckpt={run / 'best.pt'}", f"mode={mode}", f"n={n}", f"nrow={size[0]}", "save_tensor=true")
        assert code == 0, err
        png = run / "samples" / f"{mode}.png"
        width, height = Image.open(png).size
        assert (width, height) == (size[0] * 30 + 2, size[1] * 30 + 2)
        assert torch.load(png.with_suffix(".pt")).shape[1:] == (1, 28, 28)

    # a checkpoint is data: a planted _target_ is refused, never imported or called
    state = load_checkpoint(run / "best.pt")
    for model_cfg in (
        {**state["config"]["model"], "_target_": "tests.test_cli.planted"},
        {"_target_": "tests.test_cli.planted", "name": "vae"},
        {"_target_": "tests.test_cli.planted"},
    ):
        torch.save({**state, "config": {**state["config"], "model": model_cfg}}, tmp_path / "planted.pt")
        for args in (["eval", f"ckpt={tmp_path / 'planted.pt'}"], ["sample", f"ckpt={tmp_path / 'planted.pt'}"]):
            code, _, err = cli(*args)
            line = one_line_error(code, err)
            assert "_target_" in line or "name" in line, line
    assert PLANTED_CALLS == []


PLANTED_CALLS: list[tuple] = []


def planted(*args, **kwargs):  # what hydra.utils.instantiate would call for the planted _target_
    PLANTED_CALLS.append((args, kwargs))


def test_autoencoder_trains_with_mse_and_has_no_prior(cli, tmp_path):
    run = tmp_path / "ae"
    code, _, err = cli("train", "model=ae", *TINY, "trainer.epochs=5", "optim.lr=3e-3", f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["binarize"] == "none"  # the autoencoder's default: grey levels
    all_black = float(
        load_dataset(OmegaConf.create({"name": "digits", "binarize": "none", "val_size": 200, "split_seed": 0}))
        .fixed("test")
        .pow(2)
        .mean()
    )
    assert 0 < metrics["test"]["mse"] < 0.7 * all_black, (metrics["test"], all_black)
    assert metrics["test"]["psnr"] == pytest.approx(-10 * math.log10(metrics["test"]["mse"]), abs=3)  # a mean of per-image dB
    assert not (run / "samples.png").exists() and (run / "reconstructions.png").is_file()
    code, _, err = cli("sample", f"ckpt={run}")
    assert "has no prior to sample from; use mode=reconstruct" in one_line_error(code, err)


def test_multirun_sweep_writes_every_run_and_a_summary(cli, tmp_path):
    sweep = tmp_path / "sweep"
    code, _, err = cli(
        "train",
        "-m",
        "model.latent_dim=2,3",
        "optim=adam,rmsprop",
        *(o for o in TINY if not o.startswith("model.latent_dim")),
        "trainer.max_steps=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 0, err
    runs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert runs == ["0", "1", "2", "3"]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted(r["overrides"] for r in rows) == sorted(
        f"model.latent_dim={d} optim={o}" for d in (2, 3) for o in ("adam", "rmsprop")
    )
    assert all(float(r["test_nll_iwae"]) > 0 for r in rows)
    assert (sweep / "summary.md").read_text().startswith("| run |")

    # genctl compare reads the sweep folder as it is
    code, out, err = cli("compare", str(sweep))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "| run | model | dataset | params | epochs | wall_time_s | test_nll_nats | bits_per_dim | estimator | samples_per_s "
        "| au | latent_units |"
    )
    assert sorted(line.split("|")[1].strip() for line in lines[2:6]) == ["0", "1", "2", "3"]
    table = list(csv.DictReader(open(sweep / "compare.csv")))
    assert {r["estimator"] for r in table} == {"IWAE bound, k=4"} and all(float(r["samples_per_s"]) > 0 for r in table)
    assert sorted(float(r["test_nll_nats"]) for r in table) == sorted(float(r["test_nll_iwae"]) for r in rows)
    with Image.open(sweep / "compare.png") as figure:
        assert figure.size[0] >= 800 and figure.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compare", str(tmp_path / "empty"))
    assert "no finished run under" in one_line_error(code, err)
    code, _, err = cli("compare", str(tmp_path / "nowhere"))
    assert "nowhere does not exist" in one_line_error(code, err)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def test_resume_after_interruption_matches_an_uninterrupted_run(cli, tmp_path):
    common = [
        *TINY,
        "trainer.epochs=3",
        "trainer.test_at_end=false",
        "trainer.batch_size=128",
        "optim.schedule=cosine",
        "optim.lr_warmup_steps=5",
    ]
    code, _, err = cli("train", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    assert code == 0, err
    # stop mid-epoch (step 20 of 15 per epoch), then continue with only resume= given
    code, _, err = cli("train", *common, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'split'}")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "split" / "last.pt")["progress"]["step"] == 20
    code, out, err = cli("train", f"resume={tmp_path / 'split'}", "trainer.max_steps=null")
    assert code == 0, err
    assert "resumed from" in out
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_resuming_a_run_whose_budget_is_spent_only_tests_it(cli, tmp_path):
    run = tmp_path / "done"
    code, _, err = cli("train", *TINY, "trainer.max_steps=3", "trainer.test_at_end=false", f"hydra.run.dir={run}")
    assert code == 0, err
    assert "test" not in json.loads((run / "metrics.json").read_text())
    before = final_weights(run)
    code, _, err = cli("train", f"resume={run}", "trainer.test_at_end=true", "eval.k=3")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["stopped"] == "max_steps"
    assert metrics["test"]["nll_iwae"]["estimator"] == "IWAE bound, k=3"
    assert all(torch.equal(before[name], value) for name, value in final_weights(run).items())


def test_autoregressive_round_trip_with_exact_nll_and_completion(cli, tmp_path):
    run = tmp_path / "pcnn"
    tiny = [
        "model=pixelcnn",
        "model.channels=8",
        "model.blocks=1",
        "model.head=8",
        "trainer.max_steps=3",
        "trainer.num_samples=4",
        "trainer.batch_size=64",
    ]
    code, _, err = cli("train", *tiny, f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["nll_exact"]["estimator"] == "exact"
    assert 0 < metrics["test"]["nll_exact"]["nats"] < 784 * 0.7  # below a fair coin per pixel after 3 steps
    code, out, err = cli("eval", f"ckpt={run}")
    assert code == 0 and "nll_exact" in out, err
    code, _, err = cli("sample", f"ckpt={run}", "mode=complete", "n=4", "nrow=4", "temperature=0.5")
    assert code == 0, err
    assert Image.open(run / "samples" / "complete.png").size == (4 * 30 + 2, 2 * 30 + 2)
    code, _, err = cli("sample", f"ckpt={run}", "mode=interpolate")
    assert "has no latent space" in one_line_error(code, err)
    code, _, err = cli("sample", f"ckpt={run}", "label=3")
    assert "is not class-conditional" in one_line_error(code, err)


@pytest.mark.slow
def test_default_vae_learns_real_digits_in_two_minutes(cli, tmp_path, mnist_9k1k):
    """The default model on the 9k/1k split: far below the 543 nats of an untrained model."""
    run = tmp_path / "real"
    code, _, err = cli(
        "train", "dataset=mnist", f"dataset.root={mnist_9k1k}", "trainer.max_time=2", "eval.k=50", f"hydra.run.dir={run}"
    )
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped"] == "max_time"
    assert metrics["test"]["nll_iwae"]["nats"] < 110


def test_class_conditional_gated_pixelcnn_trains_and_samples_by_label(cli, tmp_path):
    run = tmp_path / "cond"
    tiny = [
        "model=gated_pixelcnn",
        "model.channels=4",
        "model.layers=1",
        "model.head=4",
        "model.num_classes=10",
        "trainer.max_steps=2",
        "trainer.num_samples=2",
        "trainer.batch_size=64",
        "trainer.sample_every=100",
    ]
    code, _, err = cli("train", *tiny, f"hydra.run.dir={run}")
    assert code == 0, err
    test = json.loads((run / "metrics.json").read_text())["test"]["nll_exact"]  # scored with each image's label
    assert test["estimator"] == "exact, conditional on the class label"  # -log p(x | y)
    assert test["bits_per_dim"] == pytest.approx(test["nats"] / (784 * math.log(2)))
    code, _, err = cli("sample", f"ckpt={run}", "n=2", "nrow=2", "label=3")
    assert code == 0, err
    code, _, err = cli("sample", f"ckpt={run}", "mode=complete", "n=2", "nrow=2")  # with each test image's label
    assert code == 0, err
    code, _, err = cli("train", *tiny[:-5], "model.num_classes=5", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'x'}")
    assert "the dataset has 10 classes but model.num_classes=5" in one_line_error(code, err)


BENCH_ROWS = sorted(
    p.stem
    for pattern in ("mnist_*.yaml", "fashion_*.yaml")
    for p in (Path(__file__).parents[1] / "configs" / "experiment").glob(pattern)
)


@pytest.mark.parametrize("name", BENCH_ROWS)
def test_benchmark_rows_train_under_their_papers_protocol(name):
    """Every row of scripts/bench_models.py: the shared CPU budget, its model and loss, and its table's
    protocol: binarized MNIST with the autoregressive papers' fixed binarization (50k/10k/10k) or the
    VAE papers' dynamic one, Fashion-MNIST as 8-bit grey levels."""
    from hydra import compose, initialize_config_dir

    from genctl.config import config_dir
    from genctl.losses import build_loss
    from genctl.models import build_model
    from genctl.models.base import LatentLikelihood

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=[f"experiment={name}"])
    table, row = name.split("_", 1)
    assert row.startswith(cfg.model.name)
    budget = int(row.rsplit("_", 1)[1].removesuffix("min")) if row.endswith("min") else 10  # a longer budget's own recipe
    assert (cfg.trainer.max_time, cfg.trainer.clock, cfg.eval.k) == (budget, "cpu", 50)  # bench.yaml's but the budget
    binary = table == "mnist"
    model = build_model(cfg.model, (1, 28, 28), binary=binary)
    build_loss(cfg.loss, model, cfg.model.name)  # each model's own loss was chosen
    if not binary:
        assert (cfg.dataset.name, cfg.dataset.binarize) == ("fashion_mnist", "none")
    elif isinstance(model, LatentLikelihood):
        assert (cfg.dataset.name, cfg.dataset.binarize, cfg.dataset.val_size) == ("mnist", "dynamic", 1000)
    else:
        assert (cfg.dataset.name, cfg.dataset.binarize, cfg.dataset.val_size) == ("mnist", "static", 10000)


GPU_RECIPES = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "experiment").glob("gpu_*.yaml"))
GPU_SIZES = {  # the papers' (or the cited reproduction's) sizes each recipe states, in model.* keys
    "gpu_mnist_hvae": {"channels": 32, "scales": 2, "groups_per_scale": 10, "latent_channels": 20, "cells": 2},
    "gpu_mnist_pixelcnn": {"channels": 32, "blocks": 15, "kernel": 3, "head": 32},
    "gpu_mnist_gated_pixelcnn": {"channels": 128, "layers": 10, "head": 32},
    "gpu_mnist_pixelrnn_diag": {"variant": "diagonal_bilstm", "hidden": 16, "layers": 7},
}


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipes_build_at_their_stated_sizes_and_train_a_step(name):
    """The GPU recipes are untested on a GPU: at least they compose, say so, hold the sizes their
    comments cite, keep their paper's protocol, and their model takes a gradient step on CPU."""
    from hydra import compose, initialize_config_dir

    from genctl.config import config_dir
    from genctl.losses import build_loss
    from genctl.models import build_model

    assert set(GPU_RECIPES) == set(GPU_SIZES)
    text = (config_dir() / "experiment" / f"{name}.yaml").read_text()
    assert "UNTESTED" in text.splitlines()[1]
    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("train", overrides=[f"experiment={name}"])
    assert {k: cfg.model[k] for k in GPU_SIZES[name]} == GPU_SIZES[name]
    assert (cfg.trainer.max_time, cfg.trainer.precision, cfg.trainer.device) == (None, "auto", "auto")
    assert cfg.dataset.binarize == ("dynamic" if name == "gpu_mnist_hvae" else "static")
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), binary=True)
    loss = build_loss(cfg.loss, model, cfg.model.name)
    x = torch.rand(2, 1, 28, 28).round()
    loss(model, x, step=0)["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "model",
    [
        ["model=vae", *TINY],
        ["model=pixelcnn", "model.channels=4", "model.blocks=1", "model.head=4", "trainer.epochs=1", "trainer.num_samples=2"],
    ],
    ids=["vae", "pixelcnn"],
)
def test_eval_and_sample_build_no_autograd_graph(cli, tmp_path, monkeypatch, model):
    from genctl.nn.masked import MaskedConv2d

    run = tmp_path / "run"
    code, _, err = cli("train", *model, "trainer.max_steps=2", "trainer.test_at_end=false", f"hydra.run.dir={run}")
    assert code == 0, err
    seen: list[bool] = []  # per module call / incremental pixel step: could autograd record it?

    def record(*_):
        seen.append(torch.is_grad_enabled() or not torch.is_inference_mode_enabled())

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    at = MaskedConv2d.at
    monkeypatch.setattr(MaskedConv2d, "at", lambda self, *a: (record(), at(self, *a))[1])
    try:
        for args in (
            ["eval", f"ckpt={run}", "eval.k=2", "eval.chunk=1"],
            ["sample", f"ckpt={run}", "n=2"],
            ["sample", f"ckpt={run}", "n=2", "fast=false"],
        ):
            before = len(seen)
            code, _, err = cli(*args)
            assert code == 0, err
            assert len(seen) > before, args  # the check saw the model run
    finally:
        handle.remove()
    assert not any(seen)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(cli, tmp_path):
    """trainer.compile=true runs the loss through torch.compile: same losses, same weights up to rounding."""
    common = [
        "model=fvsbn",
        "trainer.batch_size=256",
        "trainer.max_steps=4",
        "trainer.num_samples=4",
        "trainer.test_at_end=false",
    ]
    runs, graphs = {}, {}
    for flag in ("false", "true"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        code, _, err = cli("train", *common, f"trainer.compile={flag}", f"hydra.run.dir={tmp_path / flag}")
        assert code == 0, err
        runs[flag] = final_weights(tmp_path / flag)
        graphs[flag] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == {"false": 0, "true": graphs["true"]} and graphs["true"] >= 1
    for name in runs["false"]:
        torch.testing.assert_close(runs["true"][name], runs["false"][name], rtol=1e-4, atol=1e-5)


def test_bf16_mixed_precision_trains_on_cpu_and_fp16_asks_for_cuda(cli, tmp_path):
    run = tmp_path / "bf16"
    code, _, err = cli("train", *TINY, "trainer.precision=bf16", "trainer.max_steps=3", f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and metrics["test"]["nll_iwae"]["nats"] < 784 * math.log(2)
    assert "scaler" in load_checkpoint(run / "last.pt")
    code, _, err = cli("train", *TINY, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'fp32'}")
    assert code == 0, err
    fp32 = json.loads((tmp_path / "fp32" / "metrics.json").read_text())
    assert fp32["train_loss"] != metrics["train_loss"]  # bf16 rounding shows: autocast was on
    assert abs(fp32["train_loss"] - metrics["train_loss"]) < 0.01 * fp32["train_loss"]
    code, _, err = cli("train", *TINY, "trainer.precision=fp16", "trainer.device=cpu")
    assert "trainer.precision=fp16 needs a CUDA device" in one_line_error(code, err)
    code, _, err = cli("train", *TINY, "trainer.precision=16")
    assert "precision=16 is not valid (expected one of 32, bf16, fp16, auto)" in one_line_error(code, err)


@pytest.fixture
def poisoned_steps(monkeypatch):
    """Make the ELBO NaN on the given (0-based) training steps."""
    from genctl.losses.elbo import ELBO

    steps: set[int] = set()
    original = ELBO.__call__

    def poisoned(self, model, x, step, y=None):
        out = original(self, model, x, step, y)
        if step in steps:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ELBO, "__call__", poisoned)
    return steps


def test_a_nonfinite_loss_stops_the_run_naming_step_and_batch(cli, tmp_path, poisoned_steps):
    poisoned_steps.add(10)  # 8 batches per epoch: the 11th step is epoch 2, batch 3
    run = tmp_path / "nan"
    code, _, err = cli("train", *TINY, "trainer.epochs=3", f"hydra.run.dir={run}")
    assert code == 2 and "Traceback" not in err
    line = err.split("\r")[-1].strip()  # after the progress bar's last refresh: one line
    assert "\n" not in line and line.startswith(
        "genctl train: error: non-finite loss at step 11 (epoch 2, batch 3 of 8; window means loss=nan"
    )
    assert f"the last good checkpoint is {run / 'last.pt'} (step 8)" in line and "trainer.skip_nonfinite=true" in line
    state = load_checkpoint(run / "last.pt")
    assert state["progress"]["step"] == 8 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_skip_nonfinite_skips_the_bad_steps_and_finishes(cli, tmp_path, poisoned_steps):
    poisoned_steps.update({3, 10})
    run = tmp_path / "skip"
    code, _, err = cli("train", *TINY, "trainer.epochs=2", "trainer.skip_nonfinite=true", f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_steps"] == 2 and metrics["steps"] == 16 and math.isfinite(metrics["train_loss"])
    assert all(torch.isfinite(v).all() for v in load_checkpoint(run / "last.pt")["model"].values())


@pytest.mark.parametrize("how", ["every step skipped", "no finite validation loss"])
def test_a_run_that_trained_nothing_fails_and_says_so(cli, tmp_path, poisoned_steps, how):
    """skip_nonfinite must not turn a run whose every step was bad into a 'completed' one that
    reports an untrained (or NaN) model's test numbers."""
    run = tmp_path / "bad"
    args = [*TINY, "trainer.skip_nonfinite=true", f"hydra.run.dir={run}"]
    if how == "every step skipped":
        poisoned_steps.update(range(8))  # the one epoch's 8 steps
        expected = "the run failed: all 8 steps had a non-finite loss and were skipped, so nothing was trained"
    else:  # the first step blows the weights up: the rest are skipped and every validation loss is NaN
        args.append("optim.lr=1e30")
        expected = "the run failed: no validation loss was finite, so there is no best.pt (7 of 8 steps skipped)"
    code, _, err = cli("train", *args)
    assert code == 2 and "Traceback" not in err, err
    assert err.split("\r")[-1].strip() == f"genctl train: error: {expected}; lower optim.lr or set trainer.grad_clip"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["error"].startswith(expected) and "test" not in metrics
    assert "test (best.pt)" not in (run / "train.log").read_text()
