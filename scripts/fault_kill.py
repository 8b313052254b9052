"""Crash safety: SIGKILL a training process at random moments, again and again, and
check every time that the checkpoint left on disk loads and that training resumes from it.

Each round starts `genctl train` (fresh until a last.pt exists, then with resume=RUN), waits a
random time once the job has started (Hydra has written this round's RUN/.hydra/config.yaml, so
Python's imports are behind it and building the data and model is ahead), kills it with SIGKILL
(no handler runs, a checkpoint write may be cut in half), then loads RUN/last.pt with genctl's
own loader. Checkpoints are written to a temp file and renamed, so a kill leaves either the
previous complete file or the new one, never a torn one; the step count must never go backwards.
A last round trains to the end.

Prints one row per kill and writes JSON (default bench_out/fault_kill.json).
Usage: python scripts/fault_kill.py [--kills 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genctl.errors import GenctlError
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.record import RunRecord

REPO = Path(__file__).resolve().parents[1]
# the tiny model on the embedded digits (configs/debug/tiny.yaml) in small batches: an epoch takes a
# fraction of a second and writes last.pt, so kills land in every phase (start-up, steps,
# validation, checkpoint writes); the epochs outlast every kill, and the last round runs them out
TRAIN = ["debug=tiny", "trainer.epochs=300", "trainer.batch_size=64", "trainer.sample_every=1000"]


def step_of(run: Path) -> int | None:
    """The step stored in run/last.pt, None before the first one; raises if it does not load."""
    path = run / "last.pt"
    if not path.exists():
        return None
    return int(load_checkpoint(path)["progress"]["step"])


def wait_for_start(proc: subprocess.Popen, run: Path, since: float) -> None:
    """Until Hydra writes the job's config into the run folder (each round, resumed ones too) or
    the process ends: a file's time, not the wording of a log line."""
    config = run / ".hydra" / "config.yaml"
    while proc.poll() is None:
        if config.is_file() and config.stat().st_mtime >= since:
            return
        time.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-wait", type=float, default=10.0, help="longest time from the job's start to a kill, seconds (start-up takes a few)"
    )
    p.add_argument("--out", default=str(REPO / "bench_out" / "fault_kill.json"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    run = Path(tempfile.mkdtemp(prefix="genctl-fault-")) / "run"
    rows, previous = [], -1
    print(f"run folder {run}; {a.kills} SIGKILLs at random times up to {a.max_wait:g}s into each job")
    print("| kill | after (s) | last.pt step | loads | step never went back |")
    print("|---|---|---|---|---|")
    for kill in range(1, a.kills + 1):
        args = TRAIN + ([f"resume={run}"] if (run / "last.pt").exists() else [f"hydra.run.dir={run}"])
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
        [sys.executable, "-m", "genctl", "train", *TRAIN, f"resume={run}"], cwd=REPO, capture_output=True, text=True
    )
    record = RunRecord.read(run) if final.returncode == 0 else None
    ok = all(r["loads"] and r["monotonic"] for r in rows) and record is not None
    summary = {
        "kills": len(rows),
        "checkpoints_that_load": sum(r["loads"] for r in rows if r["step"] is not None),
        "kills_before_any_checkpoint": sum(r["step"] is None for r in rows),
        "torn_temp_files_left": len(list(run.glob(".*.tmp"))),  # writes cut short; never read
        "final_run_exit_code": final.returncode,
        "final_epochs": record and record.epochs,
        "final_test": record and record.evaluations["test"].metrics,
        "all_ok": ok,
    }
    print(json.dumps(summary, indent=2))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
