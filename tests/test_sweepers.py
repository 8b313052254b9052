"""Hydra's Optuna sweeper and submitit launcher through genctl's configs (genctl[sweep] extra)."""

from __future__ import annotations

import csv

import pytest
import yaml
from hydra.errors import MissingConfigException

from genctl.config import error_line
from tests.conftest import TINY

QUICK = [o for o in TINY if "batch_size" not in o and "latent_dim" not in o] + ["trainer.max_steps=3"]


def test_a_three_trial_optuna_search_minimizes_validation_loss(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs genctl[sweep]")
    sweep = tmp_path / "optuna"
    code, _, err = cli("train", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *QUICK, f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    trials = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert trials == ["0", "1", "2"]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.lr", "trainer.batch_size"}
    values = [float(row["best_val_loss"]) for row in csv.DictReader(open(sweep / "summary.csv"))]
    assert len(values) == 3 and result["best_value"] == pytest.approx(min(values))


def test_submitit_local_launcher_runs_a_sweep(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs genctl[sweep]")
    sweep = tmp_path / "submitit"
    code, _, err = cli("train", "-m", "hydra/launcher=local", "model.latent_dim=2,3", *QUICK, f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == ["0", "1"]


def test_a_missing_plugin_says_which_extra_to_install():
    ex = MissingConfigException("not found", missing_cfg_file="hydra/sweeper/optuna", options=["basic"])
    assert error_line(ex) == (
        "hydra/sweeper=optuna comes from an optional plugin that is not installed: pip install 'genctl[sweep]'"
    )
