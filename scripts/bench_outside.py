"""Time outside the optimizer steps under each recipe's default cadences, from plain runs.

Each recipe is `genctl train experiment=RECIPE dataset.root=DATA trainer.max_time=BUDGET
trainer.test_at_end=false`: no keep_best_at marks (bench_curves.py's runs validate at every mark,
which is its instrument and not the recipe's cadence) and no test pass (it comes after training).
The share is metrics.json's outside_steps_share: validation, last.pt and best.pt, image grids and
logs, over the run's wall time, the end's validation, checkpoint and grids included. A share
cadence takes an event only while the share, the end's events counted in, stays within its 4%, and
the end's events cost the same whatever the budget: a budget shorter than the recipe's own (the
default 5 CPU minutes, half of bench.yaml's) weighs them more, so a row under 5% there is under 5%
at its own budget too.

Prints the table and writes JSON and Markdown (default bench_out/outside/); --results DIR writes
them to DIR/results/outside.{md,json}, keeping the rows found there that this run did not measure.
Budgets are CPU minutes: run nothing else meanwhile.
Usage: python scripts/bench_outside.py --data DIR [--rows fashion_pixelcnn,...] [--budget 5] [--reuse] [--results docs]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from genctl.runs.record import FILENAME, RunRecord
from genctl.runtime import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import REPO, TABLES, genctl, with_earlier  # noqa: E402 - the rows, once

AIM = 0.05  # the most of a run's time the default cadences may leave outside the steps


def plain_run(recipe: str, data: Path, budget: float, out: Path, reuse: bool) -> dict:
    """Train ``recipe`` for ``budget`` CPU minutes with its own cadences and read what its events cost."""
    run = out / recipe
    if not (reuse and (run / FILENAME).exists()):
        args = [f"experiment={recipe}", f"dataset.root={data}", f"trainer.max_time={budget:g}", "trainer.test_at_end=false"]
        args += [f"hydra.run.dir={run}", "overwrite=true"]
        genctl("train", *args)
    record = RunRecord.read(run)
    row = {
        "recipe": recipe,
        "budget_cpu_min": budget,
        "cpu": describe_cpu(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "protocol": record.protocol,
        "precision": record.precision,
        "epochs": record.epochs,
        "steps": record.steps,
        "wall_time_s": record.wall_time_s,
        "outside_steps_s": record.outside_steps_s,
        "outside_steps_share": record.outside_steps_share,
    }
    print(table([row]), flush=True)
    return row


def table(rows: list[dict]) -> str:
    head = ["recipe", "CPU minutes", "epochs", "steps", "wall s", "outside the steps, s", "share", f"under {AIM:.0%}"]
    lines = ["| " + " | ".join(head + ["precision", "CPU", "data"]) + " |", "|" + "---|" * (len(head) + 3)]
    for r in rows:
        share = r["outside_steps_share"]
        cells = [r["recipe"], f"{r['budget_cpu_min']:g}", str(r["epochs"]), f"{r['steps']:,}", f"{r['wall_time_s']:.0f}"]
        cells += [f"{r['outside_steps_s']:.1f}", f"{share:.1%}", "yes" if share < AIM else "**no**"]
        cells += [(r["precision"] or "").split(" ")[0], r["cpu"], r["protocol"] or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder holding MNIST/ and FashionMNIST/ (torchvision's layout)")
    p.add_argument("--rows", default=",".join(r for rows in TABLES.values() for r in rows))
    p.add_argument("--budget", type=float, default=5.0, help="CPU minutes per run (at most the recipes' own 10)")
    p.add_argument("--out", type=Path, default=REPO / "bench_out" / "outside")
    p.add_argument("--reuse", action="store_true", help="keep runs already in --out")
    p.add_argument("--results", type=Path, default=None, help="also write DIR/results/outside.md and outside.json")
    a = p.parse_args()
    rows = [plain_run(recipe, a.data.resolve(), a.budget, a.out, a.reuse) for recipe in a.rows.split(",")]
    if a.results:  # rows measured earlier (at their own budget, on their own CPU) stay
        rows = with_earlier(a.results / "results" / "outside.json", rows, "recipe")
    text = table(rows)
    print("\n" + text)
    for folder in [a.out] + ([a.results / "results"] if a.results else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "outside.md").write_text(text + "\n")
        (folder / "outside.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
