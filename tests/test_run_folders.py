"""Run folders: one of its own for every run, and an existing run never trained over without a word."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hydra.core.utils
import pytest
from hydra import compose, initialize_config_dir

from genctl.cli.overrides import register_resolvers
from genctl.config import config_dir, hydra_version_base
from genctl.errors import GenctlError
from genctl.runs.folder import claim
from tests.conftest import TINY, one_line_error
from tests.test_resume import SHORT, files


class FrozenClock(dt.datetime):
    """``${now:...}`` as Hydra reads it, stopped at one instant."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 1, 12, 0, 0, 123456)


def test_runs_started_at_the_same_instant_get_folders_of_their_own(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)
    for _ in range(2):
        code, _, err = cli("train", *SHORT)
        assert code == 0, err
    runs = sorted((tmp_path / "runs" / "vae").iterdir())
    assert len(runs) == 2, runs
    assert all(r.name.startswith("2026-01-01_12-00-00-123456-") and (r / "last.pt").is_file() for r in runs)


def test_training_into_an_existing_run_is_refused_unless_overwrite(cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={run}")
    assert code == 0, err
    before = files(run)
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={run}")
    line = one_line_error(code, err)
    assert f"{run} already holds a run" in line and f"resume={run}" in line and "overwrite=true" in line
    assert files(run) == before
    again = [*TINY, "trainer.max_steps=1", "trainer.test_at_end=false", "overwrite=true"]
    code, _, err = cli("train", *again, f"hydra.run.dir={run}")
    assert code == 0, err
    assert "removed the earlier run's files" in err
    assert len((run / "history.jsonl").read_text().splitlines()) == 1  # this run's validation only
    assert json.loads((run / "metrics.json").read_text())["steps"] == 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1


def test_a_sweep_into_a_sweep_folder_that_holds_runs_is_refused(cli, tmp_path):
    sweep = tmp_path / "sweep"
    code, _, err = cli("train", "-m", *SHORT, "model.latent_dim=2", f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    before = files(sweep)
    code, _, err = cli("train", "-m", *SHORT, "model.latent_dim=2", f"hydra.sweep.dir={sweep}")
    line = one_line_error(code, err)
    assert f"{sweep} already holds 1 runs" in line and "overwrite=true" in line
    assert files(sweep) == before


def _composed(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(config_dir()), job_name="train", **hydra_version_base()):
        return compose("train", list(overrides), return_hydra_config=True)


def test_a_folder_with_only_a_config_and_a_log_has_no_run_to_lose(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "train.log").write_text("killed before its first validation")
    before = files(tmp_path)
    claim(_composed(f"hydra.run.dir={tmp_path}"), multirun=False)  # no refusal: trained into
    assert files(tmp_path) == before  # and nothing removed without overwrite=true
    (tmp_path / "last.pt").write_bytes(b"a checkpoint")
    with pytest.raises(GenctlError, match="already holds a run"):
        claim(_composed(f"hydra.run.dir={tmp_path}"), multirun=False)


@pytest.mark.parametrize("restarts", ["TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"])
def test_a_restarted_job_trains_in_the_folder_its_first_attempt_was_let_into(monkeypatch, tmp_path, restarts):
    (tmp_path / "last.pt").write_bytes(b"")
    cfg = _composed(f"hydra.run.dir={tmp_path}")
    with pytest.raises(GenctlError, match="already holds a run"):
        claim(cfg, multirun=False)
    monkeypatch.setenv(restarts, "1")
    claim(cfg, multirun=False)


def test_resume_may_write_into_its_own_folder_only(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "last.pt").write_bytes(b"")
    claim(_composed(f"resume={tmp_path / 'a' / 'last.pt'}", f"hydra.run.dir={tmp_path / 'a'}"), multirun=False)
    with pytest.raises(GenctlError, match=f"{tmp_path / 'b'} already holds a run"):
        claim(_composed(f"resume={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'b'}"), multirun=False)


def test_registering_the_resolvers_again_is_harmless():
    register_resolvers()
    register_resolvers()
    first, second = _composed(), _composed()
    assert Path(first.hydra.run.dir).name != Path(second.hydra.run.dir).name
    assert first.hydra.run.dir == first.hydra.run.dir  # cached: the same wherever one config reads it


def test_a_second_training_into_a_folder_in_use_is_refused_and_a_killed_ones_lock_is_no_obstacle(cli, tmp_path):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "genctl", "train", *TINY, "trainer.epochs=100000", "trainer.test_at_end=false"]
    first = subprocess.Popen(
        [*command, f"hydra.run.dir={folder}"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (folder / ".hydra" / "overrides.yaml").is_file():  # Hydra writes it once the dispatcher let the run in
            assert first.poll() is None and time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.2)
        code, _, err = cli("train", *SHORT, f"hydra.run.dir={folder}")
        line = one_line_error(code, err)
        assert f"{folder} is being written by another genctl train (process {first.pid})" in line, line
        assert first.poll() is None  # the first one trains on, alone in its folder
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={folder}", "overwrite=true")  # its lock died with it
    assert code == 0, err
    assert not list(folder.glob(".*.lock"))  # the lock goes when the training ends


@pytest.mark.parametrize(("rank", "named", "held"), [("0", True, True), ("1", True, False), ("0", False, False)])
def test_under_torchrun_rank_0_alone_holds_the_folder_the_command_line_names(monkeypatch, tmp_path, rank, named, held):
    from genctl.cli.main import _hold_run_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    args = [f"hydra.run.dir={tmp_path / 'run'}"] if named else []
    with contextlib.ExitStack() as stack:
        assert _hold_run_folder(_composed(*args), False, args, stack) == args  # rank 0 names a new folder later (_rank_args)
        assert sorted(p.name for p in tmp_path.iterdir()) == (["run"] if held else [])
        if held:  # the other ranks are not refused by it: they never ask (only rank 0 writes)
            assert [p.name for p in (tmp_path / "run").iterdir()] == [".genctl.lock"]
    assert not list(tmp_path.rglob(".genctl.lock"))


def test_an_export_folder_is_not_trained_into(cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={run}")
    assert code == 0, err
    code, _, err = cli("export", f"ckpt={run}")
    assert code == 0, err
    before = files(run / "export")
    for extra in ([], ["overwrite=true"]):
        code, _, err = cli("train", *SHORT, f"hydra.run.dir={run / 'export'}", *extra)
        line = one_line_error(code, err)
        assert f"hydra.run.dir={run / 'export'} is an export folder (model.safetensors" in line, line
    assert files(run / "export") == before


@pytest.mark.parametrize(
    "args",
    [
        ["hydra.run.dir=afile"],
        ["hydra.run.dir=afile/sub"],
        ["hydra.run.dir=/dev/null"],
        ["hydra.run.dir=/proc/self"],
        ["hydra.run.dir=" + "x" * 300],
        ["hydra.run.dir=" + "a/" * 3000],
        ["-m", "hydra.sweep.dir=afile"],
    ],
    ids=["file", "below-a-file", "dev-null", "proc-self", "300-characters", "3000-levels", "sweep-dir-file"],
)
def test_a_run_folder_that_cannot_be_one_is_one_line(cli, tmp_path, args):
    (tmp_path / "afile").write_text("not a folder")
    code, _, err = cli("train", *SHORT, *args)
    flag = args[-1].split("=")[0]
    line = one_line_error(code, err)
    assert line.startswith(f"genctl train: error: {flag}=") and "cannot hold a run" in line and f"choose another {flag}" in line
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and (tmp_path / "afile").read_text() == "not a folder"


def test_compare_out_a_file_is_one_line(cli, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"model": "vae", "dataset": "digits"}))
    (tmp_path / "afile").write_text("not a folder")
    code, _, err = cli("compare", "run", "--out", "afile")
    line = one_line_error(code, err)
    assert "afile is not a folder; pass --out DIR" in line, line
    assert (tmp_path / "afile").read_text() == "not a folder"
