"""``genctl train resume=RUN``: what it replays from a run folder, what it refuses, and what a
refused, failed or interrupted resume leaves (the run exactly as it was); Ctrl-C outside the
training loop, which stops cleanly by itself, is one line saying what the run folder holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

import genctl.cli.overrides
import genctl.eval.score
import genctl.train.build
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.folder import replayed_overrides
from tests.conftest import TINY, one_line_error

SHORT = [*TINY, "trainer.max_steps=2", "trainer.test_at_end=false"]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path: to compare a run before and after."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupted_line(code: int, err: str) -> str:
    """The one line of an interruption (after the progress bar, where training had begun)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line]
    assert code == 130, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def run(cli, tmp_path) -> Path:
    """A two-step run of the tiny VAE, resumable."""
    folder = tmp_path / "run"
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={folder}")
    assert code == 0, err
    return folder


def stored(run: Path, *extra: str) -> None:
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), *extra]))


def test_only_genctls_own_settings_are_replayed(tmp_path):
    (tmp_path / ".hydra").mkdir()
    lines = ["model=ae", "debug=tiny", "trainer.max_steps=2", "paths.data_dir=/data", "experiment=mnist_vae"]
    lines += ["resume=elsewhere", "overwrite=true", "logger=[mlflow]", "tracking.mlflow.experiment=x"]
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(lines))
    kept, left_out = replayed_overrides(tmp_path)
    assert kept == ["model=ae", "debug=tiny", "trainer.max_steps=2", "paths.data_dir=/data", "experiment=mnist_vae"]
    assert left_out == ["logger=[mlflow]", "tracking.mlflow.experiment=x"]  # given again at a resume, with a warning


def planted_recipe(folder: Path, marker: Path) -> Path:
    """A YAML file that, loaded by Hydra as a config, has Hydra create ``marker`` when the job starts;
    the path without its suffix, as a group choice names a config."""
    folder.mkdir()
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    planted:\n"
        f"      _target_: builtins.open\n      file: {marker}\n      mode: w\n"
    )
    return recipe.with_suffix("")


ESCAPES = [
    "experiment={escape}",
    "model={escape}",
    "dataset={escape}",
    "debug={escape}",
    "trainer={absolute}",
    "hydra/launcher={escape}",
    "experiment@_global_={escape}",
    "+experiment={escape}",
    "++model.planted=1",
    "~trainer.grad_clip",
    "hydra.job.chdir=true",
    "+hydra.callbacks.planted._target_=builtins.open",
    "model._target_=builtins.open",
    "unknown.key=1",
    "model=vae,ae",
]


@pytest.mark.parametrize("entry", ESCAPES)
def test_a_stored_entry_genctl_would_not_write_refuses_the_resume_and_runs_nothing(cli, run, tmp_path, entry):
    marker = tmp_path / "planted.txt"
    recipe = planted_recipe(tmp_path / "evil", marker)
    line = entry.format(escape="../" * 40 + str(recipe).lstrip("/"), absolute=recipe)
    stored(run, line)
    before = files(run)
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    message = one_line_error(code, err)
    assert f"{run / '.hydra' / 'overrides.yaml'} is refused: '{line}'" in message, message
    assert not marker.exists()
    assert files(run) == before


def test_the_planted_recipe_runs_its_callback_when_a_person_names_it(cli, tmp_path):
    """What the refusals above keep out is real: named on the command line (a person's own choice),
    the escaping group choice loads the YAML and Hydra runs its callback."""
    marker = tmp_path / "planted.txt"
    recipe = planted_recipe(tmp_path / "evil", marker)
    code, _, err = cli("train", *SHORT, "experiment=" + "../" * 40 + str(recipe).lstrip("/"), f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, err
    assert marker.exists()


def test_launch_settings_in_a_stored_run_are_left_out_with_a_warning(cli, run):
    stored(run, "logger=[tensorboard]")
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    assert code == 0, err
    assert "warning: not replayed from" in err and "logger=[tensorboard]" in err
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 3


def test_a_resume_that_cannot_continue_the_run_is_refused_leaving_it_byte_identical(cli, run):
    before = files(run)
    for args, expected in (
        (["model=ae"], "model.name=ae cannot continue"),
        (["dataset.val_size=100"], "dataset.val_size=100 cannot continue"),
        (["trainer.batch_size=64"], "trainer.batch_size=64 cannot continue"),
    ):
        code, _, err = cli("train", f"resume={run}", *args)
        line = one_line_error(code, err)
        assert expected in line and "(trained with " in line, line
        assert files(run) == before, args
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 3


def test_a_resume_trains_with_the_optimizer_settings_it_is_given(cli, run):
    """optim.lr and the other optimizer settings a resume may change take effect from the resumed
    step (the stored optimizer state keeps only its moments), and the log says what changed."""
    code, _, err = cli("train", f"resume={run}", "optim.lr=0.5", "optim.weight_decay=0.25", "trainer.max_steps=3")
    assert code == 0, err
    state = load_checkpoint(run / "last.pt")
    (group,) = state["optimizer"]["param_groups"]
    assert group["lr"] == 0.5 and group["weight_decay"] == 0.25  # constant schedule, no warm-up
    assert state["scheduler"]["base_lrs"] == [0.5] and state["config"]["optim"]["lr"] == 0.5
    assert state["progress"]["step"] == 3 and "exp_avg" in next(iter(state["optimizer"]["state"].values()))
    log = (run / "train.log").read_text()
    assert "from here on: optim.lr 0.001 -> 0.5, optim.weight_decay 0.0 -> 0.25, trainer.max_steps 2 -> 3" in log


def test_a_resume_that_fails_before_training_leaves_the_record_as_it_was(cli, run):
    before = files(run)
    code, _, err = cli("train", f"resume={run}", "trainer.val_batch_size=0")  # refused while the trainer is built
    assert "val_batch_size must be >= 1" in one_line_error(code, err)
    assert files(run) == before
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    assert code == 0, err


def test_a_missing_checkpoint_is_refused_before_anything_is_written(cli, tmp_path):
    code, _, err = cli("train", f"resume={tmp_path / 'nowhere'}")
    assert "no checkpoint" in one_line_error(code, err) or "does not exist" in err
    assert not (tmp_path / "nowhere").exists()


def test_a_moving_average_out_of_range_refuses_the_resume_leaving_the_run_as_it_was(cli, run):
    before = files(run)
    code, _, err = cli("train", f"resume={run}", "trainer.ema=1.5")
    assert "trainer: ema is a decay and must be in [0, 1)" in one_line_error(code, err)
    assert files(run) == before


def test_training_state_that_does_not_fit_the_run_is_one_line(cli, run):
    state = torch.load(run / "last.pt", weights_only=True)
    for rng in (state["rng"], *state["rng_ranks"]):
        rng["torch"] = rng["torch"][:3]  # a random stream's state cut short: the right type, the wrong contents
    torch.save(state, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    line = one_line_error(code, err)
    assert f"checkpoint {run / 'last.pt'} cannot be resumed: its training state does not fit this run (" in line
    assert (run / "last.pt").read_bytes() == before


@pytest.mark.parametrize("form", ["quoted", "escaped"])
def test_a_run_folder_whose_name_needs_quoting_is_resumed_in_that_folder(cli, tmp_path, form):
    folder = tmp_path / "my run, (2)"
    code, _, err = cli("train", *SHORT, f"hydra.run.dir='{folder}'")
    assert code == 0, err
    assert load_checkpoint(folder / "last.pt")["progress"]["step"] == 2
    named = f"'{folder}'" if form == "quoted" else re.sub(r"([ ,()])", r"\\\1", str(folder))
    code, _, err = cli("train", f"resume={named}", "trainer.max_steps=3")
    assert code == 0, err
    assert load_checkpoint(folder / "last.pt")["progress"]["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no other folder was trained into


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_start_up_is_one_line(cli, monkeypatch, run, tmp_path):
    with monkeypatch.context() as patched:
        patched.setattr(genctl.cli.overrides, "compose_command_line", interrupt)
        code, _, err = cli("train", *SHORT, f"hydra.run.dir={tmp_path / 'fresh'}")
        assert interrupted_line(code, err) == "genctl train: error: interrupted before it started: nothing was written"
        assert not (tmp_path / "fresh").exists()
    monkeypatch.setattr(genctl.train.build, "load_dataset", interrupt)
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={tmp_path / 'fresh'}")
    line = interrupted_line(code, err)
    assert "interrupted during start-up" in line and "nothing was trained" in line
    assert not (tmp_path / "fresh" / "last.pt").exists()
    before = files(run)
    code, _, err = cli("train", f"resume={run}", "trainer.max_steps=3")
    line = interrupted_line(code, err)
    assert f"continue with: genctl train resume={run}" in line
    assert files(run) == before


def test_ctrl_c_during_the_final_test_is_one_line_and_the_checkpoints_are_complete(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(genctl.eval.score, "evaluate", interrupt)
    folder = tmp_path / "run"
    code, _, err = cli("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={folder}")
    line = interrupted_line(code, err)
    assert "after training" in line and f"genctl eval ckpt={folder}" in line
    assert load_checkpoint(folder / "best.pt") and load_checkpoint(folder / "last.pt")["progress"]["step"] == 2
