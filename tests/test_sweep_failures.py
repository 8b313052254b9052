"""A sweep goes on past a failed job, records its error and lists it in the summary."""

from __future__ import annotations

import csv
import json

import pytest

from genctl.runs.record import FILENAME
from tests.conftest import TINY

REFUSED = "latent_dim must be >= 1, got 0"


def test_a_failed_job_is_recorded_listed_and_the_sweep_goes_on(cli, tmp_path):
    sweep = tmp_path / "sweep"
    code, out, err = cli("train", "-m", "model.latent_dim=4,0,8", *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}")
    summary = sweep / "summary.md"
    assert code == 1
    assert err.strip().splitlines()[-1] == f"genctl train: error: 1 of 3 jobs failed (job 1); their errors are in {summary}"
    assert [line for line in out.splitlines() if "job failed" in line] == [f"job failed: model 'vae': {REFUSED}"]
    assert "Traceback" not in out + err
    failed = json.loads((sweep / "1" / FILENAME).read_text())
    assert list(failed) == ["error"] and REFUSED in failed["error"] and "\n" not in failed["error"]
    for job in ("0", "2"):  # the job after the failed one ran too
        assert "test" in json.loads((sweep / job / FILENAME).read_text())

    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [(r["run"], r["overrides"]) for r in rows] == [(str(i), f"model.latent_dim={d}") for i, d in enumerate((4, 0, 8))]
    assert list(rows[0])[-1] == "error"
    assert [r["error"] for r in rows][::2] == ["", ""] and REFUSED in rows[1]["error"]
    assert rows[1]["test_nll_iwae"] == "" and float(rows[2]["test_nll_iwae"]) > 0
    header, _, *lines = summary.read_text().splitlines()
    assert header.endswith("| error |") and REFUSED in lines[1] and len(lines) == 3


def test_an_unexpected_error_fails_its_job_only(cli, tmp_path, monkeypatch):
    from genctl.train import build

    fit = build.Trainer.fit

    def fit_or_break(self):
        if self.model.latent_dim == 3:
            raise ZeroDivisionError("division by zero\nsecond line")
        return fit(self)

    monkeypatch.setattr(build.Trainer, "fit", fit_or_break)
    sweep = tmp_path / "sweep"
    code, _, err = cli("train", "-m", "model.latent_dim=3,2", *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}")
    assert code == 1 and "1 of 2 jobs failed (job 0)" in err
    assert json.loads((sweep / "0" / FILENAME).read_text()) == {"error": "ZeroDivisionError: division by zero second line"}
    assert "test" in json.loads((sweep / "1" / FILENAME).read_text())


def test_a_single_run_still_fails_in_one_line(cli, tmp_path):
    code, _, err = cli("train", *TINY, "model.latent_dim=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and err.strip().splitlines()[-1] == f"genctl train: error: model 'vae': {REFUSED}"
    assert not (tmp_path / "run" / FILENAME).exists()


def test_a_failed_job_under_the_submitit_launcher(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs genctl[sweep]")
    sweep = tmp_path / "submitit"
    code, _, err = cli(
        "train", "-m", "hydra/launcher=local", "model.latent_dim=0,2", *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}"
    )
    assert code == 1 and "1 of 2 jobs failed (job 0)" in err
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert REFUSED in rows[0]["error"] and rows[1]["error"] == "" and float(rows[1]["test_nll_iwae"]) > 0
