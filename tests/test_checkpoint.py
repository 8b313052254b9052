"""Atomic checkpoint writes (genctl/runs/checkpoint.py)."""

from __future__ import annotations

import pytest
import torch

from genctl.runs import checkpoint
from genctl.runs.checkpoint import load_checkpoint, save_checkpoint


def test_a_failed_write_keeps_the_old_file_and_the_next_write_clears_dead_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"config": {}, "value": torch.tensor(1)})
    (tmp_path / ".last.pt.killed.tmp").write_bytes(b"half a checkpoint")  # what a SIGKILL mid-write leaves

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the write dies half way

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"config": {}, "value": torch.tensor(2)})
    assert int(load_checkpoint(path)["value"]) == 1  # the old checkpoint, whole
    monkeypatch.undo()
    save_checkpoint(path, {"config": {}, "value": torch.tensor(3)})
    assert int(load_checkpoint(path)["value"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
