"""Every shape of user error is one line with exit code 2, reached through Hydra's public API only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genctl.config import config_dir, group_choices, hydra_version_base
from tests.conftest import one_line_error

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
    code, _, err = cli("train", "dataset=mnist", f"hydra.run.dir={tmp_path / 'run'}")
    line = one_line_error(code, err)
    assert str(tmp_path / "store" / "MNIST" / "raw" / "train-images-idx3-ubyte") in line
    assert "GENCTL_DATA=DIR or dataset.root=DIR" in line


def test_help_names_genctl_data_and_no_local_folder(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "GENCTL_DATA" in out and "shared" not in out
    code, out, _ = cli("train", "--help")
    assert code == 0 and "paths: default" in out and "shared" not in out
