"""Test NLL against compute: one training run per Table 1 row, best.pt kept at CPU-minute marks.

Each row is `genctl train experiment=RECIPE dataset.root=DATA trainer.max_time=BUDGET
trainer.keep_best_at=[MARKS]`, one run for every mark: RECIPE is the row's recipe for the budget
(configs/experiment/ROW_<BUDGET>min.yaml where the budget has its own, else the row's 10-minute
recipe stretched, its cosine schedule ending where the budget does); the loop validates at each
mark and keeps best.pt as it stands there as best@<m>min.pt (a recipe whose epochs end before the
budget does, for a model that converges sooner, has its final best.pt at the marks after). Each kept
checkpoint is then scored on the official 10,000 test digits with `genctl eval`, by the row's
estimator (exact for the autoregressive rows, IWAE with the recipe's eval.k for the latent ones),
and filed in the run's metrics.json as test@best@<m>min.pt. Latent rows also get the IWAE bound at
k=1000 on the first 200 test digits beside eval.k's on the same digits, for the final best.pt.
The table sets each row's 60-minute NLL against its target (TARGETS: one for a CPU with native
bf16, one for an AVX2-only CPU, chosen by the CPU the row ran on).

The rows of LONG (the issue's 60-minute rows, and the Diagonal BiLSTM: the PixelCNN-type row
best at 10 minutes, so a candidate for that target) train for --long CPU minutes, the others for
--short. Budgets are CPU minutes of the training process (trainer.clock=cpu, about half as many
wall minutes on 2 idle cores): run nothing else meanwhile, torch's threads spin while they wait.

Prints the table (NLL in nats at each mark beside the paper's number), writes JSON and Markdown
(default bench_out/curves/) and the figure (every row's curve, CPU minutes on a log axis, the
paper's number as a marker); --results DIR writes the figure to DIR/results/curves.png, the
table to DIR/results/curves.md and the rows to DIR/results/curves.json, keeping the rows of earlier
sessions found there (each names the CPU it ran on) beside the ones run now, and rewrites the
NLL-against-compute section of DIR/RESULTS.md. --reuse keeps runs and evaluations already there.
Usage: python scripts/bench_curves.py --data DIR [--rows mnist_made,...] [--long 60] [--short 10] [--reuse] [--results docs]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genctl.runs.folder import RunFolder
from genctl.runs.record import FILENAME, RunRecord, evaluation_name
from genctl.runtime import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import (  # noqa: E402 - the rows, their papers, once
    NO_PAPER,
    PAPER,
    REPO,
    SUBSET,
    TABLES,
    TIGHT_K,
    gap,
    genctl,
    refresh_curves,
    tight_subset,
    with_earlier,
)

MARKS = (2.5, 5, 10, 20, 40, 60)  # CPU minutes
LONG = (
    "mnist_fvsbn",
    "mnist_nade",
    "mnist_made",
    "mnist_pixelcnn",
    "mnist_pixelrnn_diag",
    "mnist_vae_mlp",
    "mnist_hvae",
)
# NLL to reach at 60 CPU minutes on 2 cores (nats): (on a CPU with native bf16, on an AVX2-only one);
# the papers' numbers plus what a 2-core budget leaves
TARGETS = {
    "mnist_fvsbn": (97.7, 97.7),
    "mnist_nade": (92.0, 92.0),
    "mnist_made": (89.4, 89.4),
    "PixelCNN-type": (83.0, 85.0),
    "mnist_vae_mlp": (89.5, 89.5),
    "mnist_hvae": (82.0, 84.0),
}
# Rows whose target is their kind's: the best of the kind's rows at 60 minutes must reach it
KINDS = {"mnist_pixelcnn": "PixelCNN-type", "mnist_pixelrnn_diag": "PixelCNN-type"}


def answers_to(row: dict) -> str:
    """The TARGETS entry a row is judged by: its kind's, else its own."""
    return KINDS.get(row["row"], row["row"])


def target(row: dict) -> float | None:
    """The row's 60-minute target on the kind of CPU it ran on (describe_cpu names it)."""
    if answers_to(row) not in TARGETS:
        return None
    native = "no native bf16" not in row["cpu"] and "no AVX2" not in row["cpu"]
    return TARGETS[answers_to(row)][0 if native else 1]


def recipe_for(row: str, budget: float) -> str:
    """The row's recipe for this budget: ``<row>_<budget>min`` where the budget has one of its own
    (configs/experiment/), else the row's 10-minute recipe with its cosine stretched to the budget."""
    own = f"{row}_{budget:g}min"
    return own if (REPO / "configs" / "experiment" / f"{own}.yaml").is_file() else row


def curve(row: str, data: Path, budget: float, out: Path, reuse: bool) -> dict:
    """Train ``row`` once for ``budget`` CPU minutes keeping best.pt at each mark, and score every mark."""
    run = out / row
    marks = [m for m in MARKS if m <= budget]
    recipe = recipe_for(row, budget)
    if not (reuse and (run / FILENAME).exists()):
        args = [f"experiment={recipe}", f"dataset.root={data}", f"trainer.max_time={budget:g}"]
        args += [f"trainer.keep_best_at=[{','.join(f'{m:g}' for m in marks)}]", f"hydra.run.dir={run}", "overwrite=true"]
        args += ["trainer.test_at_end=false"]  # the last mark's evaluation below scores that same best.pt
        genctl("train", *args)
    folder, cfg = RunFolder(run), OmegaConf.load(RunFolder(run).config)
    completed = RunRecord.read(run).stopped == "completed" and folder.best.is_file()
    points, scored = [], set()
    for m in marks:
        kept = folder.kept(m)
        if not kept.is_file():
            if not completed:
                continue  # the budget stopped the run before the mark (or there was no best.pt yet)
            kept = folder.best  # the recipe's epochs ended before the mark: its best.pt is the best so far there too
        name = evaluation_name("test", kept.name)
        if name not in scored and not (reuse and name in RunRecord.read(run).evaluations):
            genctl("eval", f"ckpt={kept}", f"data_root={data}", f"eval.k={cfg.eval.k}", f"eval.compile={cfg.eval.compile}")
        scored.add(name)
        nll = RunRecord.read(run).best_nll(name)
        points.append({"cpu_min": m, "nll_nats": nll.nats, "estimator": nll.estimator})
    record = RunRecord.read(run)
    paper = PAPER.get(row)
    return {
        "row": row,
        "recipe": recipe,
        "cpu": describe_cpu(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "budget_cpu_min": budget,
        "protocol": record.protocol,
        "steps": record.steps,
        "precision": record.precision,
        "outside_steps_share": record.outside_steps_share,
        "outside_marks_share": record.outside_marks_s / record.wall_time_s if record.outside_marks_s is not None else None,
        "points": points,
        "subset": tight_subset(run, data),  # latent rows: k=TIGHT_K beside eval.k on SUBSET test images, final best.pt
        "paper_nats": paper[0] if paper else None,
        "paper": paper[1] if paper else NO_PAPER.get(row, ""),
    }


def verdicts(rows: list[dict]) -> dict[str, str]:
    """Each row's target cell: the target and whether the best 60-minute NLL among the rows judged by
    the same entry (the row alone, or its kind's rows) reached it."""
    best: dict[str, float] = {}
    for r in rows:
        for p in r["points"]:
            if p["cpu_min"] == 60:
                best[answers_to(r)] = min(p["nll_nats"], best.get(answers_to(r), p["nll_nats"]))
    cells = {}
    for r in rows:
        goal, nll = target(r), best.get(answers_to(r))
        if goal is None:
            cells[r["row"]] = "-"
            continue
        reached = "" if nll is None else " (met)" if nll <= goal else f" (missed by {nll - goal:.2f})"
        kind = f" for the best {KINDS[r['row']]} row" if r["row"] in KINDS else ""
        cells[r["row"]] = f"<= {goal:g}{kind}{reached}"
    return cells


def table(rows: list[dict]) -> str:
    head = ["row", *(f"{m:g} min" for m in MARKS), "target at 60", "paper", "estimator"]
    head += [f"IWAE k={TIGHT_K} on the first {SUBSET} (vs k)", "precision", "steps", "outside the steps (the marks)"]
    head += ["recipe", "CPU", "protocol"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    goals = verdicts(rows)
    for r in rows:
        at = {p["cpu_min"]: p["nll_nats"] for p in r["points"]}
        cells = [f"{at[m]:.2f}" if m in at else "" for m in MARKS]
        cells.append(goals[r["row"]])
        paper = f"{r['paper_nats']:.2f}" if r["paper_nats"] is not None else "-"
        estimator = r["points"][-1]["estimator"] if r["points"] else ""
        precision = (r.get("precision") or "").split(" ")[0]
        steps = f"{r['steps']:,}" if r.get("steps") else ""
        facts = [paper, estimator, gap(r) if r.get("subset") else "-", precision, steps, outside(r)]
        facts += [r.get("recipe", r["row"]), r.get("cpu", ""), r["protocol"] or ""]
        lines.append("| " + " | ".join([r["row"], *cells, *facts]) + " |")
    return "\n".join(lines)


def outside(row: dict) -> str:
    """The run's share of time outside the optimizer steps, and in brackets what keeping best.pt at the
    marks took of it (runs from before that was counted apart show the total alone)."""
    share, marks = row.get("outside_steps_share"), row.get("outside_marks_share")
    if share is None:
        return ""
    return f"{share:.1%}" + (f" ({marks:.1%})" if marks is not None else "")


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    tab20 = plt.get_cmap("tab20").colors
    ax.set_prop_cycle(color=tab20[::2] + tab20[1::2])  # more rows than the default cycle's ten colours
    for r in rows:
        if not r["points"]:
            continue
        xs, ys = [p["cpu_min"] for p in r["points"]], [p["nll_nats"] for p in r["points"]]
        (line,) = ax.plot(xs, ys, marker="o", label=r["row"].removeprefix("mnist_"))
        if r["paper_nats"] is not None:
            ax.plot([xs[-1] * 1.6], [r["paper_nats"]], marker="*", markersize=12, color=line.get_color(), linestyle="none")
    ax.set_xscale("log")
    ax.set_xticks(MARKS, [f"{m:g}" for m in MARKS])
    ax.set_xlabel("CPU minutes of training (2 cores)")
    ax.set_ylabel("test NLL, nats (binarized MNIST, official 10,000 test digits)")
    ax.set_title("NLL of the best-so-far checkpoint against compute; stars: the papers' numbers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder holding MNIST/ (torchvision's layout)")
    p.add_argument("--rows", default=",".join(TABLES["mnist"]))
    p.add_argument("--long", type=float, default=60.0, help="CPU minutes of the rows in LONG")
    p.add_argument("--short", type=float, default=10.0, help="CPU minutes of the other rows")
    p.add_argument("--out", type=Path, default=REPO / "bench_out" / "curves")
    p.add_argument("--reuse", action="store_true", help="keep runs and evaluations already in --out")
    p.add_argument("--results", type=Path, default=None, help="also write DIR/results/curves.png and curves.md")
    a = p.parse_args()
    rows = []
    for row in a.rows.split(","):
        rows.append(curve(row, a.data.resolve(), a.long if row in LONG else a.short, a.out, a.reuse))
        print(table(rows[-1:]), flush=True)
    if a.results:  # rows measured in earlier sessions (on their own CPUs) stay beside this session's
        rows = with_earlier(a.results / "results" / "curves.json", rows, "row")
        order = TABLES["mnist"]
        rows.sort(key=lambda r: order.index(r["row"]) if r["row"] in order else len(order))
    text = table(rows)
    print("\n" + text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "curves.json").write_text(json.dumps(rows, indent=2) + "\n")
    (a.out / "curves.md").write_text(text + "\n")
    figure(rows, a.out / "curves.png")
    if a.results:
        figure(rows, a.results / "results" / "curves.png")
        (a.results / "results" / "curves.md").write_text(text + "\n")
        (a.results / "results" / "curves.json").write_text(json.dumps(rows, indent=2) + "\n")
        refresh_curves(a.results)


if __name__ == "__main__":
    main()
