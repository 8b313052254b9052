"""Data-parallel training under torchrun (genctl/train/distributed.py): two CPU processes (gloo)
take the same steps as one process with the same global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from genctl.runs.checkpoint import load_checkpoint

# MADE: no sampling noise in the loss, so two ranks can match one process exactly
COMMON = [
    "model=made",
    "debug=fast",
    "model.hidden=[32]",
    "trainer.batch_size=64",
    "trainer.max_steps=6",
    "trainer.test_at_end=false",
]


def genctl_train(args: list[str], cwd, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "genctl", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    one = genctl_train([*COMMON, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = genctl_train(COMMON, tmp_path, processes=2)  # no run folder given: rank 0's clock names it
    assert two.returncode == 0, two.stderr
    folders = list((tmp_path / "runs" / "made").iterdir())
    assert len(folders) == 1, folders  # both ranks wrote into one folder
    run = folders[0]
    single, parallel = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(run / "last.pt")
    assert parallel["progress"]["step"] == 6 and len(parallel["rng_ranks"]) == 2
    for name, value in single["model"].items():  # gradients were averaged over the two halves
        torch.testing.assert_close(parallel["model"][name], value, rtol=1e-4, atol=1e-5)
    # validation is split over the ranks and summed back: the one-process number
    val = [json.loads(r.read_text())["best_val_loss"] for r in (tmp_path / "one" / "metrics.json", run / "metrics.json")]
    assert abs(val[0] - val[1]) < 1e-3 * val[0]
    assert (run / "train.log").read_text().count("run folder:") == 1  # rank 0 alone logs
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_global_batch_must_split_evenly(tmp_path):
    out = genctl_train([*COMMON, "trainer.batch_size=63", f"hydra.run.dir={tmp_path / 'odd'}"], tmp_path, processes=2)
    assert out.returncode != 0
    assert "trainer.batch_size=63 is the global batch: make it divisible by 2 processes" in out.stderr
