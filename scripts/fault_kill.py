"""Crash safety: SIGKILL a training process at random moments, again and again, and
check every time that the checkpoint left on disk loads and that training resumes from it.

Each round starts `genctl train` (afresh with overwrite=true until a last.pt exists, then with resume=RUN), waits a
random time once the job has started (Hydra has written this round's RUN/.hydra/config.yaml, so
Python's imports are behind it and building the data and model is ahead), kills it with SIGKILL
(no handler runs, a checkpoint write may be cut in half), then loads RUN/last.pt with genctl's
own loader. Checkpoints are written to a temp file and renamed, so a kill leaves either the
previous complete file or the new one, never a torn one; the step count must never go backwards.
A last round trains to the end.

--torchrun: the same under `torchrun --nproc_per_node=2 --max-restarts=KILLS`, started once and
never told to resume. Each time an attempt has started, one of its two workers, chosen at random,
is SIGKILLed at a random moment; torchrun stops the other and starts both again, and the restart
must find the run's last.pt and continue from it by itself (the run's train.log says where each
attempt resumed). The run's final parameters must equal, bit for bit, those of an uninterrupted
2-process run of the same command.

Prints one row per kill and writes JSON (default bench_out/fault_kill.json, fault_kill_torchrun.json).
Usage: python scripts/fault_kill.py [--kills 20] [--seed 0] [--torchrun] [--epochs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from genctl.errors import GenctlError
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.folder import RunFolder
from genctl.runs.record import RunRecord

REPO = Path(__file__).resolve().parents[1]
# the tiny model on the embedded digits (configs/debug/tiny.yaml) in small batches: an epoch takes a
# fraction of a second and writes last.pt, so kills land in every phase (start-up, steps,
# validation, checkpoint writes); the epochs outlast every kill, and the last round runs them out
TRAIN = ["debug=tiny", "trainer.batch_size=64", "trainer.sample_every=1000"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def step_of(run: Path) -> int | None:
    """The step stored in run/last.pt, None before the first one; raises if it does not load."""
    path = RunFolder(run).last
    if not path.exists():
        return None
    return int(load_checkpoint(path)["progress"]["step"])


def where(run: Path) -> list[str]:
    """Continue the run from its last.pt; before the first one, start over in its folder (a kill
    during start-up leaves Hydra's files there, and genctl refuses a folder holding a run unless told)."""
    return [f"resume={run}"] if RunFolder(run).last.exists() else [f"hydra.run.dir={run}", "overwrite=true"]


def wait_for_start(proc: subprocess.Popen, run: Path, since: float) -> bool:
    """Until Hydra writes the job's config into the run folder (each round, resumed ones too) or
    the process ends (False): a file's time, not the wording of a log line."""
    config = RunFolder(run).config
    while proc.poll() is None:
        if config.is_file() and config.stat().st_mtime >= since:
            return True
        time.sleep(0.01)
    return False


def workers(launcher: subprocess.Popen) -> dict[int, int]:
    """The processes torchrun runs now (its children), by rank."""
    try:
        pids = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        environs = {int(pid): Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in pids}
    except (FileNotFoundError, ProcessLookupError):  # the launch, or a worker, just ended
        return {}
    return {int(v[5:]): pid for pid, env in environs.items() for v in env if v.startswith(b"RANK=")}


def kill_processes(a: argparse.Namespace, rng: random.Random, run: Path, train: list[str]) -> tuple[list[dict], dict]:
    """Rounds of `genctl train`, each SIGKILLed at a random moment, then one that trains to the end."""
    rows, previous = [], -1
    print("| kill | after (s) | last.pt step | loads | step never went back |")
    print("|---|---|---|---|---|")
    for kill in range(1, a.kills + 1):
        args = [*train, *where(run)]
        launched = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "genctl", "train", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_start(proc, run, launched)  # the clock starts with the job, not while Python imports
        wait = rng.uniform(0.0, a.max_wait)
        time.sleep(wait)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            step, loads = step_of(run), True
        except GenctlError as e:
            step, loads = None, False
            print(f"  checkpoint does not load: {e}")
        monotonic = step is None or step >= previous
        previous = step if step is not None else previous
        rows.append(
            {
                "kill": kill,
                "after_s": round(wait, 2),
                "step": step,
                "loads": loads,
                "monotonic": monotonic,
                "had_finished": finished,
            }
        )
        print(f"| {kill} | {wait:.2f} | {step} | {loads} | {monotonic} |", flush=True)
    final = subprocess.run(
        [sys.executable, "-m", "genctl", "train", *train, *where(run)], cwd=REPO, capture_output=True, text=True
    )
    record = RunRecord.read(run) if final.returncode == 0 else None
    summary = {
        "kills": len(rows),
        "checkpoints_that_load": sum(r["loads"] for r in rows if r["step"] is not None),
        "kills_before_any_checkpoint": sum(r["step"] is None for r in rows),
        "torn_temp_files_left": len(list(run.glob(".*.tmp"))),  # writes cut short; never read
        "final_run_exit_code": final.returncode,
        "final_epochs": record and record.epochs,
        "final_test": record and record.evaluations["test"].metrics,
        "all_ok": all(r["loads"] and r["monotonic"] for r in rows) and record is not None,
    }
    return rows, summary


def kill_torchrun_workers(a: argparse.Namespace, rng: random.Random, run: Path, train: list[str]) -> tuple[list[dict], dict]:
    """One torchrun launch with --max-restarts, a worker of each attempt SIGKILLed; then an
    uninterrupted launch of the same command, whose final parameters the killed one must match."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = run.with_name("torchrun.log")
    command = [*TORCHRUN, f"--max-restarts={a.kills}", "-m", "genctl", "train", *train, f"hydra.run.dir={run}"]
    with open(log, "w") as out:
        launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
    rows: list[dict] = []
    since = time.time()
    while launcher.poll() is None and wait_for_start(launcher, run, since):
        if rows:  # this attempt is the restart after the last kill: it must continue from the last.pt it found
            rows[-1]["last_pt_step_at_restart"] = step_of(run)
        if len(rows) == a.kills:
            break
        wait = rng.uniform(0.0, a.max_wait)
        time.sleep(wait)
        ranks = workers(launcher)
        if not ranks:
            break  # training ended before this kill
        victim = rng.choice(sorted(ranks))
        since = time.time()
        os.kill(ranks[victim], signal.SIGKILL)
        rows.append({"kill": len(rows) + 1, "rank": victim, "after_s": round(wait, 2), "last_pt_step_at_restart": None})
    launcher.wait()
    output = log.read_text()
    log = RunFolder(run).log
    logged = log.read_text() if log.is_file() else ""
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at epoch \d+, step (\d+)", logged)]
    expected = [r["last_pt_step_at_restart"] for r in rows if r["last_pt_step_at_restart"] is not None]
    print("| kill | rank | after (s) | last.pt step when it restarted |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['kill']} | {r['rank']} | {r['after_s']:.2f} | {r['last_pt_step_at_restart']} |")
    reference = run.with_name("uninterrupted")
    straight = subprocess.run(
        [*TORCHRUN, "-m", "genctl", "train", *train, f"hydra.run.dir={reference}"], cwd=REPO, env=env, capture_output=True
    )
    same = None
    if launcher.returncode == 0 and straight.returncode == 0:
        ours, theirs = load_checkpoint(RunFolder(run).last)["model"], load_checkpoint(RunFolder(reference).last)["model"]
        same = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    summary = {
        "kills": len(rows),
        "restarts_that_found_a_checkpoint": len(expected),
        "resumed_at_steps": resumed,
        "every_restart_resumed_from_the_last_checkpoint": resumed == expected,
        "one_line_errors": output.count("genctl train: error:"),
        "tracebacks": output.count("Traceback"),
        "final_run_exit_code": launcher.returncode,
        "final_step": step_of(run),
        "uninterrupted_exit_code": straight.returncode,
        "same_parameters_as_uninterrupted": same,
        "all_ok": bool(same) and resumed == expected,
    }
    return rows, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-wait", type=float, default=10.0, help="longest time from the job's start to a kill, seconds (start-up takes a few)"
    )
    p.add_argument("--epochs", type=int, default=300, help="the run's length: it must outlast the kills")
    p.add_argument("--torchrun", action="store_true", help="kill one of two torchrun workers; torchrun --max-restarts resumes")
    p.add_argument("--out", help="JSON file (default bench_out/fault_kill.json, or fault_kill_torchrun.json)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    run = Path(tempfile.mkdtemp(prefix="genctl-fault-")) / "run"
    train = [*TRAIN, f"trainer.epochs={a.epochs}"]
    print(f"run folder {run}; {a.kills} SIGKILLs at random times up to {a.max_wait:g}s into each job")
    rows, summary = (kill_torchrun_workers if a.torchrun else kill_processes)(a, rng, run, train)
    print(json.dumps(summary, indent=2))
    out = Path(a.out or REPO / "bench_out" / f"fault_kill{'_torchrun' if a.torchrun else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    sys.exit(0 if summary["all_ok"] else 1)


if __name__ == "__main__":
    main()
