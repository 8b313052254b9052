"""Data-parallel training under torchrun (genctl/distributed.py): two CPU processes (gloo)
take the same steps as one process with the same global batch, only rank 0 writes, and a launch
whose worker is killed restarts by itself and continues to the parameters an uninterrupted one ends with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


FAULT = Path(__file__).with_name("elastic_fault.py")


def genctl_train(
    args: list[str], cwd: Path, processes: int = 1, restarts: int = 0, kill: str | None = None
) -> subprocess.CompletedProcess:
    """``genctl train`` in one process, or under torchrun; ``kill="RANK:STEP"``: that rank SIGKILLs
    itself before that step in torchrun's first attempt (tests/elastic_fault.py)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    launcher += [f"--max-restarts={restarts}"]
    program = [str(FAULT)] if kill else ["-m", "genctl"]
    command = [*(launcher if processes > 1 else [sys.executable]), *program, "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"GENCTL_KILL": kill} if kill else {})}
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


def test_a_killed_worker_restarts_and_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path):
    args = [*(a for a in COMMON if not a.startswith("trainer.max_steps")), "trainer.epochs=2"]  # 29 steps an epoch
    straight = genctl_train([*args, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path, processes=2)
    assert straight.returncode == 0, straight.stderr
    # rank 1 dies in the second epoch; the first epoch's last.pt is on disk, and torchrun restarts both
    killed = genctl_train(args, tmp_path, processes=2, restarts=1, kill="1:40")
    assert killed.returncode == 0, killed.stderr
    assert "genctl train: error: process 0 of 2 lost the others" in killed.stderr, killed.stderr  # the survivor, in one line
    assert "Traceback" not in killed.stderr, killed.stderr
    (run,) = (tmp_path / "runs" / "made").iterdir()  # the restart found its first attempt's folder
    assert f"resumed from {run / 'last.pt'} at epoch 1, step 29" in (run / "train.log").read_text()
    expected, restarted = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(run / "last.pt")
    assert restarted["progress"]["step"] == expected["progress"]["step"] == 58
    assert expected["model"].keys() == restarted["model"].keys()
    for name, value in expected["model"].items():
        assert torch.equal(restarted["model"][name], value), name


def genctl_eval(args: list[str], cwd: Path, processes: int) -> dict:
    """``genctl eval`` in one process or under torchrun; the test@best.pt entry it filed."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "genctl", "eval", *args]
    out = subprocess.run(
        command, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return json.loads((cwd / "run" / "metrics.json").read_text())["test@best.pt"]


def test_two_process_evaluation_equals_the_one_process_one(tmp_path):
    """Each rank scores every other batch with the batch's own random stream; the shares add up to
    the one-process means (IWAE included), and only rank 0 writes."""
    trained = genctl_train(["debug=tiny", "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    args = [f"ckpt={tmp_path / 'run'}", "eval.k=8", "eval.batch_size=64"]  # 500 test digits: 8 batches, the last one short
    one, two = genctl_eval(args, tmp_path, 1), genctl_eval(args, tmp_path, 2)
    for name in ("nll_iwae", "nll_elbo"):
        assert two[name]["nats"] == pytest.approx(one[name]["nats"], rel=1e-9), name
    assert one["nll_iwae"]["nats"] != pytest.approx(one["nll_elbo"]["nats"], rel=1e-6)  # posterior noise is in play
