"""Atomic checkpoint writes (genctl/runs/checkpoint.py)."""

from __future__ import annotations

import os
import re
import stat

import pytest
import torch

from genctl.errors import GenctlError
from genctl.runs import atomic, checkpoint
from genctl.runs.atomic import atomic_write
from genctl.runs.checkpoint import load_checkpoint, restore_model, save_checkpoint


def minimal(**entries):
    """The least a readable checkpoint holds, plus ``entries``."""
    return {"config": {"model": {"name": "fvsbn"}}, "model": {}, "data_shape": [1, 2, 2], "binary": True, **entries}


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
