"""Atomic checkpoint writes (genctl/runs/checkpoint.py)."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

from genctl.errors import GenctlError
from genctl.runs import atomic, checkpoint
from genctl.runs.atomic import atomic_write
from genctl.runs.checkpoint import load_checkpoint, restore_model, save_checkpoint
from tests.conftest import TINY, one_line_error


def minimal(**entries):
    """The least a readable checkpoint holds, plus ``entries``."""
    config = {"model": {"name": "fvsbn"}, "dataset": {"name": "digits"}}
    return {"config": config, "model": {}, "data_shape": [1, 2, 2], "binary": True, **entries}


def test_a_failed_write_keeps_the_old_file_and_the_next_write_clears_dead_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal(value=torch.tensor(1)))
    (tmp_path / ".last.pt.killed.tmp").write_bytes(b"half a checkpoint")  # what a SIGKILL mid-write leaves

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the write dies half way

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, minimal(value=torch.tensor(2)))
    assert int(load_checkpoint(path)["value"]) == 1  # the old checkpoint, whole
    monkeypatch.undo()
    save_checkpoint(path, minimal(value=torch.tensor(3)))
    assert int(load_checkpoint(path)["value"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"hello, I am a text file\n", "is corrupt or not a genctl checkpoint"),
        (b"", "is corrupt or not a genctl checkpoint"),
        ({"format": "1", **minimal()}, "'format' entry is missing or not a int"),
        ({"format": 1, **{k: v for k, v in minimal().items() if k != "data_shape"}}, "'data_shape' entry is missing"),
        ({"format": 1, **minimal(data_shape=[1, -2, 2])}, "data_shape [1, -2, 2] is not three positive sizes"),
        ({"format": 1, **minimal(config={"model": "fvsbn"})}, "its config has no model section"),
        ([1, 2, 3], "it holds a list, not a dict"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused_in_one_line(tmp_path, content, expected):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(GenctlError, match=re.escape(expected)) as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value)


def changed(state: dict, entries: dict) -> dict:
    """``state`` with ``entries``, each ``dotted.key: value`` (None: the entry removed)."""
    for key, value in entries.items():
        *parents, last = key.split(".")
        node = state
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return state


def forged(**entries):
    """The least readable checkpoint, with a moving average and progress, but for ``entries``."""
    return changed({"format": 1, **minimal(ema={"weights": {}, "updates": 0}, progress={"step": 2, "epoch": 0})}, entries)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"config.dataset": "mnist"}, "config.dataset is a str, not a mapping"),
        ({"config.dataset": None}, "config.dataset is missing"),
        ({"config.trainer": [1]}, "config.trainer is a list, not a mapping"),
        ({"config.model.name": 3}, "config.model.name is an int, not a str"),
        ({"config.eval": {3: "k"}}, "config.eval has the key 3, not a string"),
        ({"config.model.hidden": torch.zeros(2)}, "config.model.hidden is a Tensor, not a plain value"),
        ({"ema": {"weights": 5}}, "ema.weights is an int, not a mapping"),
        ({"ema.updates": None}, "ema.updates is missing"),
        ({"model": {"w": 5}}, "model.w is an int, not a Tensor"),
        ({"progress": [2]}, "progress is a list, not a mapping"),
        ({"progress.step": "2"}, "progress.step is a str, not an int or a float or None"),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, dict) else None,
)
def test_an_entry_genctl_reads_that_genctl_train_would_not_write_is_named_in_one_line(tmp_path, entries, expected):
    torch.save(forged(**entries), tmp_path / "x.pt")
    with pytest.raises(GenctlError, match=re.escape(f"{tmp_path / 'x.pt'} is not a genctl checkpoint ({expected}")) as refused:
        load_checkpoint(tmp_path / "x.pt")
    assert "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run of the tiny VAE that keeps a moving average of its weights (checkpoints hold ``ema``)."""
    from tests.test_api import train

    return train(tmp_path_factory.mktemp("tiny") / "run", *TINY, "trainer.ema=0.5")


def with_entries(path: Path, entries: dict, out: Path) -> Path:
    """``path``'s checkpoint :func:`changed` by ``entries``, written to ``out``."""
    torch.save(changed(torch.load(path, weights_only=True), entries), out)
    return out


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"optimizer": None}, "optimizer is missing"),
        ({"progress.bogus": 1}, "progress.bogus is not an entry genctl writes there"),
        ({"progress.step": 2.5}, "progress.step is a float, not an int"),
        ({"rng.python": (3, "x", None)}, "rng.python[1] is a str, not a list"),
        ({"data.position": "0"}, "data.position is a str, not an int"),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, dict) else None,
)
def test_a_resume_needs_the_training_state_genctl_train_writes(tiny_run, tmp_path, entries, expected):
    path = with_entries(tiny_run / "last.pt", entries, tmp_path / "x.pt")
    load_checkpoint(path)  # evaluating it needs none of it
    with pytest.raises(GenctlError, match=re.escape(f"{path} is not a checkpoint genctl train can continue ({expected})")):
        load_checkpoint(path, resuming=True)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [({"config.dataset": "mnist"}, "config.dataset is a str, not a mapping"), ({"ema": {"weights": 5}}, "ema.weights is an int")],
    ids=["config.dataset", "ema.weights"],
)
def test_every_reader_of_a_forged_checkpoint_names_the_entry_in_one_line(cli, tiny_run, tmp_path, entries, expected):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    with_entries(run / "last.pt", entries, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    for args in (
        ["eval", f"ckpt={run / 'last.pt'}"],
        ["sample", f"ckpt={run / 'last.pt'}"],
        ["export", f"ckpt={run / 'last.pt'}", f"out={tmp_path / 'export'}"],
        ["train", f"resume={run}"],
    ):
        code, _, err = cli(*args)
        assert f"{run / 'last.pt'} is not a genctl checkpoint ({expected}" in one_line_error(code, err), args
    assert (run / "last.pt").read_bytes() == before and not (tmp_path / "export").exists()


def test_a_checkpoint_that_would_run_code_is_refused_without_the_unsafe_advice(tmp_path, capsys):
    torch.save({"format": 1, **minimal(), "payload": Payload()}, tmp_path / "bad.pt")
    with pytest.raises(GenctlError, match="could run code when loaded") as refused:
        load_checkpoint(tmp_path / "bad.pt")
    assert "weights_only" not in str(refused.value) and "trust" not in str(refused.value)
    assert "this ran" not in capsys.readouterr().out


def test_a_model_too_large_for_memory_is_one_line(tmp_path):
    state = {"format": 1, **minimal(config={"model": {"name": "nade", "hidden": 10**9, "activation": "relu"}})}
    state["data_shape"] = [1, 28, 28]
    with pytest.raises(GenctlError, match="model 'nade' with these options does not fit in memory"):
        restore_model(state, tmp_path / "x.pt")


@pytest.mark.parametrize("how", ["oserror", "device"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, how):
    import errno
    import os

    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal(value=torch.tensor(1)))
    if how == "oserror":

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(checkpoint.torch, "save", full)
    else:  # torch's own writer on a device that is always full: a RuntimeError caused by ENOSPC
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full")
        mkstemp = atomic.tempfile.mkstemp

        def full_device(*args, **kwargs):
            fd, name = mkstemp(*args, **kwargs)
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), name

        monkeypatch.setattr(atomic.tempfile, "mkstemp", full_device)
    state = minimal(value=torch.tensor(2), weights=torch.zeros(300_000))
    expected = f"cannot write checkpoint {path}: the disk is full; the previous last.pt is intact"
    with pytest.raises(GenctlError, match=re.escape(expected)):
        save_checkpoint(path, state)
    with pytest.raises(GenctlError, match="no best.pt was written before"):
        save_checkpoint(tmp_path / "best.pt", state)
    monkeypatch.undo()
    assert int(load_checkpoint(path)["value"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_written_files_take_the_users_umask_not_a_temp_files_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "metrics.json", lambda f: f.write(b"{}"), "a run record")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
