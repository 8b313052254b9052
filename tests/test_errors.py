"""Every shape of user error is one line with exit code 2, reached through Hydra's public API only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genctl.config import config_dir, group_choices, hydra_version_base
from genctl.errors import GenctlError
from tests.conftest import TINY, one_line_error, real_data

GENCTL = Path(__file__).resolve().parents[1] / "genctl"


MODELS = f"choose one of: {', '.join(group_choices('model'))}"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "model=nope"], [f"unknown model 'nope'; {MODELS}"]),
        (["train", "hparams_search=nope"], ["unknown hparams_search 'nope'; choose one of: optuna"]),
        (["train", "hydra/launcher=nope"], ["unknown hydra/launcher 'nope'; choose one of: basic, local, slurm"]),
        (
            ["train", "model.latnt_dim=3"],
            ["unknown key 'model.latnt_dim'", "valid keys here: name, arch, latent_dim", "+model.latnt_dim=VALUE"],
        ),
        (["eval", "ckpt=x.pt", "eval.kk=3"], ["unknown key 'eval.kk'; valid keys here: ", "batch_size", " k, "]),
        (["train", "model.latent_dim=[1,"], ["cannot parse 'model.latent_dim=[1,'"]),
        (["train", "hydra.mode=BAD"], ["hydra.mode=BAD is not valid", "RUN, MULTIRUN"]),
        (["train", "hydra.job.chdir=maybe"], ["hydra.job.chdir=maybe is not valid", "bool"]),
        (["train", "model=vae,ae"], ["'model=vae,ae' is a sweep: add -m (--multirun)"]),
        (["train", "-m", "model=vae,nope"], [f"unknown model 'nope'; {MODELS}"]),
        (["train", "--multirun", "model=vae,pixelcnn", "model.latent_dim=3"], ["unknown key 'model.latent_dim'", "channels"]),
        (["train", "-m", "hydra.job.chdir=true,false"], ["cannot sweep over Hydra's own settings"]),
        (["train", "--cfg", "job", "optim=nope"], ["unknown optim 'nope'; choose one of: adam, rmsprop"]),
        (["eval"], ["ckpt is required: add ckpt=VALUE to the command line"]),
        (
            ["train", "+hydra.callbacks.x._target_=os.remove"],
            ["hydra.callbacks.x._target_=os.remove: Target 'os.remove' is blocklisted and cannot be instantiated from config to"],
        ),
        (
            ["eval", "ckpt=x.pt", "+hydra.callbacks.x._target_=builtins.eval"],
            ["hydra.callbacks.x._target_=builtins.eval: Target 'builtins.eval' is blocklisted because it allows config"],
        ),
        (
            ["train", "hydra.job_logging.handlers.console.class=os.system"],
            ["hydra.job_logging.handlers.console.class=os.system: Target 'os.system' is blocklisted"],
        ),
        (["train", "+hydra.callbacks.x._target_=genctl.nope.X"], ["hydra.callbacks.x._target_=genctl.nope.X: Error locating"]),
        (["train", "-m", "hydra.launcher._target_=os.remove"], ["hydra.launcher._target_=os.remove is not an installed"]),
    ],
    ids=[
        "group-choice",
        "optional-group-choice",
        "hydra-group-choice",
        "unknown-key",
        "unknown-key-eval",
        "syntax",
        "type-enum",
        "type-bool",
        "sweep-without-m",
        "swept-group-choice",
        "swept-group-changes-keys",
        "hydra-sweep",
        "cfg-job",
        "missing-value",
        "blocklisted-callback",
        "blocklisted-callback-eval",
        "blocklisted-log-handler",
        "unknown-callback",
        "not-a-plugin",
    ],
)
def test_each_error_shape_is_one_line_naming_the_fix(cli, tmp_path, args, expected):
    code, _, err = cli(*args)
    line = one_line_error(code, err)
    assert line.startswith(f"genctl {args[0]}: error: "), line
    for text in expected:
        assert text in line
    assert not (tmp_path / "runs").exists()  # refused before any job (or sweep job) ran


def test_a_missing_sweeper_plugin_names_the_extra(cli, monkeypatch):
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # plugins register their configs once per process: do it before hiding one
    monkeypatch.delitem(ConfigStore.instance().repo["hydra"]["sweeper"], "optuna.yaml", raising=False)
    code, _, err = cli("train", "hparams_search=optuna")
    assert one_line_error(code, err).endswith(
        "hydra/sweeper=optuna comes from an optional plugin that is not installed: pip install 'genctl[sweep]'"
    )


def test_a_config_that_asks_for_a_multirun_gets_the_flag():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs genctl[sweep]")
    from genctl.cli.overrides import check_overrides

    assert check_overrides("train", ["hparams_search=optuna"]) == ["--multirun", "hparams_search=optuna"]
    assert check_overrides("train", ["-m", "hparams_search=optuna"]) == ["-m", "hparams_search=optuna"]
    assert check_overrides("train", ["model=ae"]) == ["model=ae"]


def test_a_users_config_dir_is_left_to_hydra(cli, tmp_path):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "tiny_vae.yaml").write_text("defaults:\n  - vae\n  - _self_\nlatent_dim: 3\n")
    code, out, err = cli("train", "--config-dir", str(tmp_path / "mine"), "model=tiny_vae", "--cfg", "job")
    assert code == 0, err
    assert "latent_dim: 3" in out


def test_hydra_full_error_gives_the_full_trace(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    exe = Path(sys.executable).parent / "genctl"
    result = subprocess.run([str(exe), "train", "model=nope"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "MissingConfigException" in result.stderr


def test_no_module_reaches_into_hydra_internals():
    offenders = [str(p) for p in GENCTL.rglob("*.py") if "_internal" in p.read_text()]
    assert offenders == []


def _train_config(*overrides: str):
    with initialize_config_dir(str(config_dir()), **hydra_version_base()):
        return compose("train", list(overrides))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_genctl_data_sets_the_root_of_file_backed_datasets(monkeypatch, tmp_path, name):
    monkeypatch.delenv("GENCTL_DATA", raising=False)
    assert _train_config(f"dataset={name}").dataset.root == "data"
    monkeypatch.setenv("GENCTL_DATA", str(tmp_path))
    cfg = _train_config(f"dataset={name}")
    assert cfg.dataset.root == str(tmp_path)
    assert OmegaConf.to_container(cfg, resolve=True)["dataset"]["root"] == str(tmp_path)  # what a checkpoint stores
    assert _train_config(f"dataset={name}", "dataset.root=/elsewhere").dataset.root == "/elsewhere"


def test_a_missing_dataset_says_where_it_looked_and_how_to_fix_it(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("GENCTL_DATA", str(tmp_path / "store"))
    args = ["dataset=mnist", "trainer.max_steps=1", "trainer.test_at_end=false", *TINY]
    code, _, err = cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}")
    line = one_line_error(code, err)
    assert str(tmp_path / "store" / "MNIST" / "raw" / "train-images-idx3-ubyte") in line
    assert "GENCTL_DATA=DIR or dataset.root=DIR" in line
    assert not (tmp_path / "run" / "last.pt").exists()
    monkeypatch.setenv("GENCTL_DATA", str(real_data("MNIST")))  # the fix the line gives: the same command trains
    code, _, err = cli("train", *args, f"hydra.run.dir={tmp_path / 'fixed'}")
    assert code == 0, err
    assert (tmp_path / "fixed" / "last.pt").is_file()


def test_help_names_genctl_data_and_no_local_folder(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "GENCTL_DATA" in out and "shared" not in out
    code, out, _ = cli("train", "--help")
    assert code == 0 and "paths: default" in out and "shared" not in out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A VAE of two steps, copied into each test that evaluates it (evaluations write its metrics.json)."""
    from tests.test_api import train

    return train(tmp_path_factory.mktemp("tiny") / "run", *TINY)


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def filed(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["eval.k=9223372036854775807"],
            "k=9223372036854775807 is above 100000: every image is scored with k importance samples, so the time grows with k",
        ),
        (
            ["eval.metrics=[nll,fid]", "eval.num_samples=1000000000"],
            "eval.num_samples=1000000000 needs at least 7.81 TB of memory for the samples and features FID keeps (7.81 kB each), "
            "more than this machine's ",
        ),
        (["eval.batch_size=1000000000000"], "eval.batch_size=1000000000000 needs at least 10.3 PB of memory for images with 2 "),
        (["eval.k=100000", "eval.chunk=100000", "eval.batch_size=100000"], "of memory for images with 100000 model output(s)"),
    ],
    ids=["k", "num_samples", "batch_size", "chunk"],
)
def test_eval_refuses_sizes_that_cannot_run_before_any_work(run, cli, monkeypatch, args, expected):
    from genctl.eval import checkpoint as eval_cli

    monkeypatch.setattr(eval_cli, "load_dataset", lambda cfg: pytest.fail("the data was read before the sizes were checked"))
    before = filed(run)
    code, _, err = cli("eval", f"ckpt={run}", *args)
    line = one_line_error(code, err)
    assert expected in line
    assert "use eval.num_samples=" in line or "use eval.batch_size=" in line or "use a k up to 100000" in line
    assert filed(run) == before


def test_eval_files_the_nll_before_sample_quality_starts(run, cli, monkeypatch):
    from genctl.eval import checkpoint as eval_cli

    seen = []

    def killed_midway(*args, **kwargs):
        seen.append(filed(run).get("test@best.pt"))
        raise GenctlError("sample quality failed midway")

    monkeypatch.setattr(eval_cli, "sample_quality", killed_midway)
    code, _, err = cli("eval", f"ckpt={run}", "eval.metrics=[nll,fid]", "eval.num_samples=100", "eval.k=2")
    assert code == 2 and err.splitlines()[-1].endswith("error: sample quality failed midway"), err  # after the NLL's progress bar
    assert seen and seen[0]["nll_iwae"]["estimator"] == "IWAE bound, k=2"
    assert filed(run)["test@best.pt"] == seen[0] and "sample_quality_test@best.pt" not in filed(run)


def test_eval_refuses_fid_on_images_the_classifier_cannot_read_before_the_nll(run, cli, monkeypatch):
    from genctl.eval import score
    from genctl.models import build_model
    from genctl.runs.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "best.pt")  # the same model, of 14x14 images: no shipped classifier reads them
    model = build_model(OmegaConf.create(state["config"]["model"]), (1, 14, 14), True)
    state.update(data_shape=[1, 14, 14], model=model.state_dict())
    state.pop("ema", None)
    save_checkpoint(run / "small.pt", state)
    monkeypatch.setattr(score, "evaluate", lambda *a, **k: pytest.fail("the NLL was computed before fid was refused"))
    code, _, err = cli("eval", f"ckpt={run / 'small.pt'}", "eval.metrics=[nll,fid]", "eval.num_samples=100")
    assert one_line_error(code, err).endswith(
        "the genctl mnist classifier takes 1x28x28 images, got 1x14x14: sample quality (fid) cannot be measured "
        "for this model; use eval.metrics=[nll]"
    )
    assert "test@small.pt" not in filed(run)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.ema=1.5"], "trainer: ema is a decay and must be in [0, 1), e.g. 0.999 (0 or null: no average), got 1.5"),
        (["trainer.ema=-1"], "trainer: ema is a decay and must be in [0, 1)"),
        (["trainer.ema=1"], "trainer: ema is a decay and must be in [0, 1)"),
        (["trainer.ema=nan"], "trainer: ema is a decay and must be in [0, 1), e.g. 0.999 (0 or null: no average), got nan"),
        (["trainer.seed=-1"], "trainer: seed=-1 is not a seed: use a whole number from 0 to 4294967295"),
        (["trainer.seed=99999999999999"], "trainer: seed=99999999999999 is not a seed"),
        (["trainer.grad_clip=nan"], "trainer: grad_clip is a gradient norm and must be >= 0 (0 disables clipping), got nan"),
        (["trainer.max_time=nan"], "trainer: max_time is in minutes and must be > 0, got nan"),
        (["trainer.num_samples=-1"], "trainer: num_samples must be >= 0 (0: no such grid), got -1"),
        (["trainer.num_samples=100000000000"], "trainer.num_samples=100000000000 needs at least 314 TB of memory"),
        (["dataset.split_seed=99999999999999999999"], "dataset.split_seed=99999999999999999999 is not a seed"),
        (["dataset.val_size=abc"], "dataset.val_size='abc' is not valid: expected a whole number"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_training_option_values_that_would_crash_are_one_line_before_training(cli, tmp_path, args, expected):
    code, _, err = cli("train", *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert expected in one_line_error(code, err)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_ema_off_is_zero_or_null(cli, tmp_path):
    code, _, err = cli("train", *TINY, "trainer.max_steps=1", "trainer.ema=null", "hydra.run.dir=run")
    assert code == 0, err
    assert "ema" not in torch.load(tmp_path / "run" / "last.pt", weights_only=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "eval.seed=99999999999999"], "eval: seed=99999999999999 is not a seed: use a whole number from 0 to"),
        (["sample", "seed=-1"], "sample: seed=-1 is not a seed"),
        (["sample", "seed=99999999999999999999"], "sample: seed=99999999999999999999 is not a seed"),
        (["sample", "mode=reconstruct", "temperature=inf"], "sample: temperature must be >= 0 and finite, got inf"),
        (["sample", "mode=interpolate", "nrow=100000000000"], "nrow=100000000000 needs at least 314 TB of memory"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else None,
)
def test_eval_and_sample_option_values_that_would_crash_are_one_line(run, cli, args, expected):
    before = sorted(p.name for p in run.rglob("*"))
    code, _, err = cli(args[0], f"ckpt={run}", *args[1:])
    assert expected in one_line_error(code, err)
    assert sorted(p.name for p in run.rglob("*")) == before
