"""Every model family under one training-time budget on the real 9,000/1,000 MNIST split.

Each row is one saved recipe, `genctl train experiment=mnist_NAME dataset.root=DATA`
(configs/experiment/: the shared protocol in mnist_budget.yaml, the model and the settings chosen
for the budget in mnist_NAME.yaml). best.pt is chosen by validation loss on 1,000 of the 9,000
train digits, then scored on the 1,000 test digits (dynamic binarization protocol: the test set
drawn once from the split seed): exact NLL for autoregressive models, the IWAE bound (k=500) for
the VAE. Sampling time is 64 digits from that checkpoint (fast sampler, in-process).

Prints one Markdown table with the papers' numbers beside it and writes JSON and Markdown
(default bench_out/models/); with --results DIR also the page DIR/RESULTS.md with each row's
command and a grid of its 64 samples (DIR/results/ROW.png). A run folder that already holds
metrics.json is reused with --reuse, so an interrupted benchmark continues where it stopped, and
--reuse alone regenerates the tables and the page from finished runs.
Usage: python scripts/bench_models.py [--budget 15] [--models fvsbn,nade,...] [--data DIR] [--reuse] [--results docs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genctl.images import save_grid
from genctl.runs.checkpoint import load_checkpoint, restore_model
from genctl.runs.record import FILENAME, RunRecord

REPO = Path(__file__).resolve().parents[1]
# rows: the experiment names without their mnist_ prefix (configs/experiment/mnist_*.yaml): the
# autoregressive family and the default VAE, then the MLP VAE, the hierarchical VAE and its
# one-group ablation
FAMILIES = ["fvsbn", "nade", "made", "vae", "pixelcnn", "gated_pixelcnn", "pixelrnn"]
ROWS = [*FAMILIES, "vae_mlp", "hvae", "hvae_1group"]
# Test NLL in nats on binarized MNIST from the papers (full 60k training set, GPU budgets).
PAPER = {
    "fvsbn": (97.45, "Larochelle & Murray 2011"),
    "nade": (88.86, "Larochelle & Murray 2011"),
    "made": (88.40, "Germain et al. 2015, 1 mask"),
    "vae": (86.76, "Burda et al. 2016 (IWAE paper's VAE)"),
    "pixelcnn": (81.30, "van den Oord et al. 2016"),
    "gated_pixelcnn": (None, "no MNIST number in the paper"),
    "pixelrnn": (79.20, "van den Oord et al. 2016, Diagonal BiLSTM"),
    "vae_mlp": (86.76, "Burda et al. 2016 (IWAE paper's VAE)"),
    "hvae": (78.01, "Vahdat & Kautz 2020 (NVAE)"),
}


def sample_seconds(run: Path, n: int = 64) -> float:
    """Time to draw ``n`` digits from best.pt, measured once per run (sample_64.json) and the
    grid written beside it (samples_best.png), so regenerating the tables does not re-time."""
    record = run / "sample_64.json"
    if record.is_file() and (run / "samples_best.png").is_file():
        return json.loads(record.read_text())["seconds"]
    state = load_checkpoint(run / "best.pt")
    model = restore_model(state, run / "best.pt").eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        start = time.perf_counter()
        images = model.sample(n)
        seconds = time.perf_counter() - start
    save_grid(images, run / "samples_best.png")
    record.write_text(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}) + "\n")
    return seconds


def bench(name: str, data: Path, budget: float | None, out: Path, extra: list[str], reuse: bool) -> dict:
    run = out / name
    args = [f"experiment=mnist_{name}", f"dataset.root={data}", *extra]
    if budget is not None:
        args.append(f"trainer.max_time={budget:g}")
    if not (reuse and (run / FILENAME).exists()):
        subprocess.run(
            [sys.executable, "-m", "genctl", "train", *args, f"hydra.run.dir={run}", "overwrite=true"], check=True, cwd=REPO
        )
    record = RunRecord.read(run)
    nll = record.best_nll()
    if nll is None:
        raise SystemExit(f"{run / FILENAME} holds no test NLL")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    return {
        "row": name,
        "run": str(run),
        "model": record.model,
        "command": "genctl train " + " ".join(args).replace(str(data), os.path.relpath(data, REPO)),
        "budget_min": cfg.trainer.max_time,
        "batch_size": cfg.trainer.batch_size,
        "lr": cfg.optim.lr,
        "schedule": cfg.optim.schedule,
        "params": record.params,
        "epochs": record.epochs,
        "steps": record.steps,
        "nll_nats": nll.nats,
        "bits_per_dim": nll.bits_per_dim,
        "estimator": nll.estimator,
        "train_images_per_s": record.train_images_per_s,
        "sample_64_s": round(sample_seconds(run), 2),
        "peak_memory_mb": record.peak_memory_mb,
        "paper_nats": PAPER.get(name, (None, ""))[0],
        "paper": PAPER.get(name, (None, "no paper number"))[1],
    }


def table(rows: list[dict], budget: float) -> str:
    lines = [
        f"MNIST 9k/1k split (mnist-9k1k), dynamic binarization, {budget:g} training minutes per "
        f"model on this machine's {os.cpu_count()} CPU cores; test NLL of best.pt",
        "",
        "| experiment | params | epochs | test NLL (nats) | bits/dim | estimator | train img/s "
        "| 64 samples (s) | peak RSS (MB) | paper (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = f"{r['paper_nats']:.2f}" if r["paper_nats"] else "-"
        lines.append(
            f"| {r['row']} | {r['params']:,} | {r['epochs']} | {r['nll_nats']:.2f} | {r['bits_per_dim']:.4f} | "
            f"{r['estimator']} | {r['train_images_per_s']:.0f} | {r['sample_64_s']:.1f} | {r['peak_memory_mb']:.0f} | {paper} |"
        )
    return "\n".join(lines)


def checks(rows: list[dict]) -> list[str]:
    """The comparisons the table is for (FVSBN worst, the PixelCNNs best, the hierarchy's gain), each with its numbers."""
    nll = {r["row"]: r["nll_nats"] for r in rows}
    lines = []
    if "fvsbn" in nll:
        gap = nll["fvsbn"] - PAPER["fvsbn"][0]
        lines.append(f"FVSBN within 5 nats of its paper value (97.45): {gap:+.2f} -> {'holds' if abs(gap) <= 5 else 'FAILS'}")
        others = [n for n in nll if n != "fvsbn" and n in FAMILIES]
        if others:
            worst = max(nll[n] for n in others)
            lines.append(
                f"FVSBN worst of the AR family and the VAE: {nll['fvsbn']:.2f} vs next worst {worst:.2f} -> "
                f"{'holds' if nll['fvsbn'] > worst else 'FAILS'}"
            )
    pixel = [n for n in ("pixelcnn", "gated_pixelcnn") if n in nll]
    rivals = [n for n in ("vae", "made", "nade") if n in nll]
    if pixel and rivals:
        best_rival = min(rivals, key=nll.get)
        for n in pixel:
            lines.append(
                f"{n} below VAE/MADE/NADE (best of them: {best_rival} {nll[best_rival]:.2f}): {nll[n]:.2f} -> "
                f"{'holds' if nll[n] < nll[best_rival] else 'FAILS'}"
            )
    if "hvae" in nll and "vae_mlp" in nll:
        gain = nll["vae_mlp"] - nll["hvae"]
        lines.append(
            f"hvae at least 5 nats below the MLP VAE at the same budget: {nll['hvae']:.2f} vs {nll['vae_mlp']:.2f} "
            f"({gain:.2f} nats) -> {'holds' if gain >= 5 else 'FAILS'}"
        )
    if "hvae_1group" in nll and "hvae" in nll:
        lines.append(f"ablation, one latent group: {nll['hvae_1group']:.2f} (full hierarchy {nll['hvae']:.2f})")
    return lines


def results_page(rows: list[dict], text: str, folder: Path) -> Path:
    """FOLDER/RESULTS.md: the table, the ordering, how to reproduce each row, and its samples."""
    images = folder / "results"
    images.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results",
        "",
        "Written by `python scripts/bench_models.py --results docs` (see its docstring for the protocol);",
        "regenerate this page from finished runs with `--reuse`. Numbers from one run per row, 2-core CPU.",
        "",
        text,
        "",
        "Ordering, best first: "
        + " < ".join(f"{r['row']} {r['nll_nats']:.2f}" for r in sorted(rows, key=lambda r: r["nll_nats"])),
        "",
        *(f"- {line}" for line in checks(rows)),
        "",
        "## Each row",
        "",
    ]
    for r in rows:
        grid = images / f"{r['row']}.png"
        grid.write_bytes((Path(r["run"]) / "samples_best.png").read_bytes())
        lines += [
            f"### {r['row']}",
            "",
            f"`{r['command']}`: batch {r['batch_size']}, lr {r['lr']:g} ({r['schedule']}), {r['steps']:,} steps; "
            f"paper: {r['paper']}.",
            "",
            f"![64 samples from {r['row']}](results/{grid.name})",
            "",
        ]
    page = folder / "RESULTS.md"
    page.write_text("\n".join(lines))
    return page


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist-9k1k"))
    p.add_argument("--models", default=",".join(ROWS), help="experiments to run, without the mnist_ prefix")
    p.add_argument("--budget", type=float, help="training minutes per model (default: the experiments' trainer.max_time)")
    p.add_argument("--out", default=str(REPO / "bench_out" / "models"))
    p.add_argument("--reuse", action="store_true", help=f"keep runs that already finished (their {FILENAME})")
    p.add_argument("--results", help="also write RESULTS.md and the sample grids into this folder (e.g. docs)")
    p.add_argument("extra", nargs="*", help="overrides added to every run, e.g. eval.k=100")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.models.split(","):
        rows.append(bench(name, Path(a.data).resolve(), a.budget, out, a.extra, a.reuse))
        print(json.dumps(rows[-1]), flush=True)
        (out / "bench_models.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    text = table(rows, rows[0]["budget_min"])
    print("\n" + text)
    (out / "bench_models.md").write_text(text + "\n")
    ordered = sorted(rows, key=lambda r: r["nll_nats"])
    print("\nordering (best first): " + " < ".join(f"{r['row']} {r['nll_nats']:.1f}" for r in ordered))
    print("\n".join(checks(rows)))
    print(f"written to {out / 'bench_models.json'} and {out / 'bench_models.md'}")
    if a.results:
        print(f"results page: {results_page(rows, text, Path(a.results))}")


if __name__ == "__main__":
    main()
