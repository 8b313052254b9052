"""genctl never writes through a planted link, and a folder it cannot write is one line before any work.

A run or export folder is data: someone may hand it over with ``samples.png -> ~/victim`` inside.
Each test plants a link to a victim (a file, or a folder holding a file) and checks that the
victim is byte-identical afterwards and the command refused in one line, or the writer refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from genctl.config import config_dir
from genctl.errors import GenctlError
from genctl.runs.export import export_checkpoint
from tests.conftest import TINY, one_line_error
from tests.test_api import train
from tests.test_resume import SHORT

VICTIM = b"precious: nothing genctl writes belongs here\n"
# The names that are folders (a link there leads to the victim folder): in a run folder, and in a sweep folder.
FOLDERS = {".hydra", "samples", "tb", "export", "hparams", "0"}
# What genctl train and Hydra write in a run folder, and genctl sample (samples/) and export (export/).
RUN_NAMES = [
    ".hydra",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "train.log",
    "history.jsonl",
    "last.pt",
    "best.pt",
    "metrics.json",
    "samples.png",
    "reconstructions.png",
    "latent_map.png",
    "samples",
    "tb",
]
REFUSED = "is a symbolic link: genctl never writes through a link; remove it"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of two steps with its export (``run/export``), copied into each test that plants links."""
    run = train(tmp_path_factory.mktemp("links") / "run", *TINY)
    export_checkpoint(run)
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run", symlinks=True))


@pytest.fixture
def victim(tmp_path) -> SimpleNamespace:
    """A file and a folder outside every run (the folder holds an event file, which tb/ clean-ups delete)."""
    folder = tmp_path / "victim_folder"
    folder.mkdir()
    (folder / "events.out.tfevents.victim").write_bytes(VICTIM)
    (tmp_path / "victim").write_bytes(VICTIM)
    return SimpleNamespace(file=tmp_path / "victim", folder=folder, before=tree(tmp_path / "victim_folder"))


def tree(folder: Path) -> dict[str, object]:
    """Every entry under ``folder`` (links as links, not followed): to compare before and after."""
    entries: dict[str, object] = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            else:
                entries[key] = "folder" if path.is_dir() else path.read_bytes()
    return entries


def untouched(victim: SimpleNamespace) -> bool:
    return victim.file.read_bytes() == VICTIM and tree(victim.folder) == victim.before


def plant(folder: Path, name: str, victim: SimpleNamespace) -> Path:
    """Replace ``folder/name`` (whatever is there) with a link to the victim file or folder."""
    path = folder / name
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim.folder if Path(name).name in FOLDERS else victim.file)
    return path


@pytest.mark.parametrize("name", RUN_NAMES)
@pytest.mark.parametrize("how", ["resume", "new-folder"])
def test_a_link_in_a_run_folder_refuses_training_before_anything_is_written(cli, run, victim, tmp_path, name, how):
    if how == "resume":  # the review's case: ln -s ~/victim RUN/samples.png; genctl train resume=RUN
        folder, args = run, [f"resume={run}", "trainer.max_steps=3"]
    else:  # an explicit hydra.run.dir that holds no run yet, only the link
        folder, args = tmp_path / "new", [*SHORT, f"hydra.run.dir={tmp_path / 'new'}"]
        folder.mkdir()
    link = plant(folder, name, victim)
    before = tree(folder)
    code, _, err = cli("train", *args)
    line = one_line_error(code, err)
    assert f"{link} {REFUSED}" in line, line
    assert tree(folder) == before and untouched(victim)


def test_a_link_in_a_run_folder_refuses_overwrite_before_it_removes_anything(cli, run, victim):
    plant(run, "tb", victim)  # overwrite=true removes tb/'s event files: the victim folder's, through the link
    before = tree(run)
    code, _, err = cli("train", *SHORT, f"hydra.run.dir={run}", "overwrite=true")
    assert REFUSED in one_line_error(code, err)
    assert tree(run) == before and untouched(victim)


def test_a_link_in_a_sweep_folder_refuses_the_sweep_before_its_first_job(cli, run, victim, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for planted in (plant(sweep, "summary.md", victim), plant(sweep, "0", victim)):  # a job folder, led elsewhere
        code, _, err = cli("train", "-m", *SHORT, "model.latent_dim=2,3", f"hydra.sweep.dir={sweep}")
        assert f"{planted} {REFUSED}" in one_line_error(code, err)
        planted.unlink()
    shutil.copytree(run, sweep / "0", symlinks=True)
    plant(sweep / "0", "train.log", victim)  # in a job folder of an earlier sweep
    code, _, err = cli("train", "-m", *SHORT, "model.latent_dim=2,3", f"hydra.sweep.dir={sweep}")
    assert f"{sweep / '0' / 'train.log'} {REFUSED}" in one_line_error(code, err)
    assert untouched(victim) and sorted(p.name for p in sweep.iterdir()) == ["0"]


def test_history_is_appended_without_following_a_link(run, victim):
    from genctl.train.hooks import History

    plant(run, "history.jsonl", victim)
    trainer = SimpleNamespace(progress=SimpleNamespace(epoch=1, step=2, elapsed=1.0))
    with pytest.raises(GenctlError, match=REFUSED):
        History(run / "history.jsonl").on_validation(trainer, {"loss": 1.0}, {"loss": 2.0}, improved=True)
    assert untouched(victim)
    (run / "history.jsonl").unlink()
    History(run / "history.jsonl").on_validation(trainer, {"loss": 1.0}, {"loss": 2.0}, improved=True)
    assert '"val_loss": 2.0' in (run / "history.jsonl").read_text()


def test_train_log_is_opened_without_following_a_link(run, victim):
    logging_config = yaml.safe_load((config_dir() / "hydra" / "job_logging" / "genctl.yaml").read_text())
    handler = get_class(logging_config["handlers"]["file"]["class"])  # the class Hydra builds train.log's handler from
    plant(run, "train.log", victim)
    with pytest.raises(GenctlError, match=REFUSED):
        handler(str(run / "train.log"))
    assert untouched(victim)


@pytest.mark.parametrize("name", ["samples.png", "samples/prior.png"])
def test_an_image_grid_is_not_written_through_a_link(run, victim, name):
    from genctl.images import save_grid

    plant(run, "samples" if name.startswith("samples/") else name, victim)
    with pytest.raises(GenctlError, match=REFUSED):
        if name == "samples.png":  # the grids training writes (genctl.train.report), into the run folder itself
            save_grid(torch.rand(4, 1, 28, 28), run / name)
        else:  # genctl sample's, into the run folder's samples/
            save_grid(torch.rand(4, 1, 28, 28), run / name, root=run)
    assert untouched(victim)


@pytest.mark.parametrize("write", ["checkpoint", "record"])
def test_a_checkpoint_or_a_record_is_not_written_over_a_link(run, victim, write):
    from genctl.runs.checkpoint import save_checkpoint
    from genctl.runs.record import RunRecord

    name = "last.pt" if write == "checkpoint" else "metrics.json"
    link = plant(run, name, victim)
    with pytest.raises(GenctlError, match=REFUSED):  # not replaced either: a link there is refused, not removed silently
        if write == "checkpoint":
            save_checkpoint(link, {"model": {}})
        else:
            RunRecord(model="vae").write(run)
    assert link.is_symlink() and untouched(victim)


@pytest.mark.parametrize("name", ["samples", "samples/prior.png", "samples/prior.pt"])
@pytest.mark.parametrize("source", ["run", "export"])
def test_sample_writes_no_grid_or_tensor_through_a_link(cli, run, victim, name, source):
    folder = run if source == "run" else run / "export"
    link = plant(folder, name, victim)
    before = tree(folder)
    code, _, err = cli("sample", f"ckpt={folder}", "n=4", "save_tensor=true")
    assert f"{link} {REFUSED}" in one_line_error(code, err)
    assert tree(folder) == before and untouched(victim)
    link.unlink()  # without the link: new regular files
    code, _, err = cli("sample", f"ckpt={folder}", "n=4", "save_tensor=true")
    assert code == 0, err
    written = folder / "samples"
    assert not any(p.is_symlink() for p in written.iterdir())
    assert torch.load(written / "prior.pt").shape == (4, 1, 28, 28) and untouched(victim)


@pytest.mark.parametrize("name", ["export", "export/model.safetensors"])
def test_export_writes_nothing_through_a_link(cli, run, victim, name):
    if name == "export":
        shutil.rmtree(run / "export")
        (victim.folder / "events.out.tfevents.victim").unlink()  # an empty folder, which an export would fill
        victim.before = tree(victim.folder)
    link = plant(run, name, victim)
    code, _, err = cli("export", f"ckpt={run}", "overwrite=true")
    assert f"{link} {REFUSED}" in one_line_error(code, err)
    assert untouched(victim)


def test_eval_refuses_a_linked_record_before_it_evaluates(cli, run, victim, monkeypatch):
    from genctl.eval import score

    monkeypatch.setattr(score, "evaluate", lambda *a, **k: pytest.fail("evaluated although the result cannot be written"))
    plant(run, "metrics.json", victim)
    code, _, err = cli("eval", f"ckpt={run}")
    assert REFUSED in one_line_error(code, err)
    assert untouched(victim)


@pytest.mark.parametrize("name", ["compare.md", "compare.csv", "compare.png"])
def test_compare_writes_no_table_or_figure_through_a_link(cli, run, victim, name):
    plant(run, name, victim)
    code, _, err = cli("compare", str(run))
    assert REFUSED in one_line_error(code, err)
    assert untouched(victim)


def test_the_sweep_summary_writes_nothing_through_a_link(run, victim, tmp_path, capsys):
    from genctl.cli.sweep import SweepSummary

    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "0", symlinks=True)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    plant(sweep, "hparams", victim)  # an earlier summary's event files there are deleted: the victim's, through a link
    SweepSummary().on_multirun_end(config)
    assert untouched(victim) and (sweep / "summary.csv").is_file()
    for name in ("summary.csv", "summary.md"):
        plant(sweep, name, victim)
        with pytest.raises(SystemExit) as ended:
            SweepSummary().on_multirun_end(config)
        assert ended.value.code == 2 and REFUSED in capsys.readouterr().err
        assert untouched(victim)
        (sweep / name).unlink()


@pytest.fixture
def read_only():
    """``read_only(folder)``: make ``folder`` read-only for this test. As root permission bits do not
    stop writes, so a read-only bind mount does (skipped where mounting is not allowed)."""
    mounted: list[Path] = []
    chmodded: list[tuple[Path, int]] = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for path in [folder, *folder.rglob("*")]:
                chmodded.append((path, path.stat().st_mode))
                path.chmod(path.stat().st_mode & ~0o222)
            return folder
        if shutil.which("mount") is None:
            pytest.skip("no mount command for a read-only bind mount")
        for options in (["--bind"], ["-o", "remount,bind,ro"]):
            done = subprocess.run(["mount", *options, str(folder), str(folder)], capture_output=True, text=True)
            if done.returncode:
                pytest.skip(f"a read-only bind mount is not allowed here: {done.stderr.strip()}")
            if options == ["--bind"]:
                mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):  # lazily: a test's working folder may still be inside
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
    for path, mode in reversed(chmodded):
        path.chmod(mode)


READ_ONLY = "on a read-only file system" if os.geteuid() == 0 else "is not writable"


@pytest.mark.parametrize(
    "command",
    ["eval", "sample", "export", "compare", "train-resume", "train-into-it", "train-below-it", "train-default-folder"],
)
def test_a_read_only_folder_is_one_line_before_any_work(cli, run, read_only, monkeypatch, tmp_path, command):
    from genctl.eval import score

    monkeypatch.setattr(score, "evaluate", lambda *a, **k: pytest.fail("evaluated although the result cannot be written"))
    before = tree(run)
    read_only(run)
    args = {
        "eval": ["eval", f"ckpt={run}"],
        "sample": ["sample", f"ckpt={run}", "n=4"],
        "export": ["export", f"ckpt={run}", "overwrite=true"],
        "compare": ["compare", str(run)],
        "train-resume": ["train", f"resume={run}", "trainer.max_steps=3"],
        "train-into-it": ["train", *SHORT, f"hydra.run.dir={run}", "overwrite=true"],
        "train-below-it": ["train", *SHORT, f"hydra.run.dir={run / 'new'}"],
        "train-default-folder": ["train", *SHORT],
    }[command]
    if command == "train-default-folder":
        monkeypatch.chdir(run)
    code, _, err = cli(*args)
    line = one_line_error(code, err)
    assert READ_ONLY in line, line
    assert tree(run) == before
