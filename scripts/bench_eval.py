"""IWAE evaluation speed: one checkpoint scored by ``genctl eval`` in every setting, eager and
compiled (``eval.compile``), in one process and under torchrun.

For each run folder given (its best.pt, copied aside so its own metrics.json stays as it is),
``genctl eval`` scores the checkpoint's test split at ``eval.k=K`` with the default chunk, batch
size and seed in each setting: one process with torch's threads (one per core), or ``torchrun
--nproc_per_node=CORES`` with one thread per process; eager, or the importance-weight pass
compiled. Each setting runs as its own command, so its wall time is what a user waits for:
start-up, data, compilation and the evaluation. The bound each setting files is printed beside it
(per-batch random streams make it the same in every setting, to float tolerance).
``--data DATA/mnist-9k1k`` scores 1,000 test digits (that folder's test split is the last 1,000
official ones). On 2 shared cores benchmarks need an idle machine: run nothing else meanwhile.

Prints a table and writes JSON (default bench_out/bench_eval.json).
Usage: python scripts/bench_eval.py --data DIR --runs RUN [RUN ...] [--k 500] [--settings 1e,1c,Ne,Nc]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genctl.runs.folder import BEST, RunFolder
from genctl.runs.record import RunRecord, evaluation_name

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
# name -> (processes, eval.compile)
SETTINGS = {"1e": (1, False), "1c": (1, True), "Ne": (CORES, False), "Nc": (CORES, True)}


def genctl_eval(run: Path, data: str, k: int, processes: int, compiled: bool) -> dict:
    """One ``genctl eval`` of ``run``/best.pt: wall seconds and the IWAE bound (nats) it filed."""
    folder = RunFolder(run)
    folder.record.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "genctl", "eval"]
    command += [f"ckpt={folder.best}", f"data_root={data}", f"eval.k={k}", f"eval.compile={str(compiled).lower()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if processes > 1 else dict(os.environ)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    nll = RunRecord.read(run).best_nll(evaluation_name("test", BEST))
    return {"seconds": seconds, "nll_iwae": nll.nats, "estimator": nll.estimator}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the folder holding the checkpoints' dataset (data_root)")
    p.add_argument("--runs", nargs="+", required=True, help="run folders with a best.pt (e.g. bench_out/models/mnist_hvae)")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"of {', '.join(SETTINGS)} (N: {CORES} processes)")
    p.add_argument("--out", default=str(REPO / "bench_out" / "bench_eval.json"))
    a = p.parse_args()
    settings = a.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: {', '.join(unknown)} not one of {', '.join(SETTINGS)}")
    rows = []
    print("| run | processes | eval.compile | k | wall (s) | IWAE (nats) | speed-up over 1 process, eager |")
    print("|---|---|---|---|---|---|---|")
    for source in map(Path, a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / source.name
            run.mkdir()
            shutil.copy(RunFolder(source).best, RunFolder(run).best)
            reference = None
            for name in settings:
                processes, compiled = SETTINGS[name]
                row = {"run": source.name, "processes": processes, "compile": compiled, "k": a.k}
                row.update(genctl_eval(run, str(Path(a.data).resolve()), a.k, processes, compiled))
                reference = reference or (row["seconds"] if name == "1e" else None)
                speedup = f"{reference / row['seconds']:.2f}x" if reference else "-"
                print(
                    f"| {row['run']} | {processes} | {str(compiled).lower()} | {a.k} | {row['seconds']:.1f} | "
                    f"{row['nll_iwae']:.6f} | {speedup} |",
                    flush=True,
                )
                rows.append(row)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"cores": CORES, "data": str(Path(a.data).resolve()), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
