"""Every model family under one CPU time budget on the real 9,000/1,000 MNIST split (issue 4).

Each model trains with `genctl train model=NAME dataset=mnist dataset.root=... trainer.max_time=B`
(its default config; best.pt chosen by validation loss on 1,000 of the 9,000 train digits), then
its best checkpoint is scored on the 1,000 test digits (dynamic binarization protocol: the test
set drawn once from the split seed): exact NLL for autoregressive models, the IWAE bound with
k=500 for the VAE. Sampling time is 64 digits from that checkpoint (fast sampler, in-process).

Prints one Markdown table with the papers' numbers beside it and writes JSON
(default bench_out/bench_models.json).
Usage: python scripts/bench_models.py [--budget 10] [--models fvsbn,nade,...] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from genctl.train.checkpoint import load_checkpoint, restore_model

REPO = Path(__file__).resolve().parents[1]
MODELS = ["fvsbn", "nade", "made", "vae", "pixelcnn", "gated_pixelcnn", "pixelrnn"]
# Test NLL in nats on binarized MNIST from the papers (full 60k training set, GPU budgets).
PAPER = {
    "fvsbn": (97.45, "Larochelle & Murray 2011"),
    "nade": (88.86, "Larochelle & Murray 2011"),
    "made": (88.40, "Germain et al. 2015, 1 mask"),
    "vae": (86.76, "Burda et al. 2016 (IWAE paper's VAE)"),
    "pixelcnn": (81.30, "van den Oord et al. 2016"),
    "gated_pixelcnn": (None, "no MNIST number in the paper"),
    "pixelrnn": (79.20, "van den Oord et al. 2016, Diagonal BiLSTM"),
}


def sample_seconds(run: Path, n: int = 64) -> float:
    state = load_checkpoint(run / "best.pt")
    model = restore_model(state, run / "best.pt").eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        start = time.perf_counter()
        model.sample(n)
        return time.perf_counter() - start


def bench(name: str, data: Path, budget: float, k: int, out: Path, extra: list[str]) -> dict:
    run = out / name
    # image grids only at the end: autoregressive sampling inside the loop would eat the budget
    args = [f"model={name}", "dataset=mnist", f"dataset.root={data}", f"trainer.max_time={budget:g}", f"eval.k={k}",
            "trainer.sample_every=1000000", *extra]
    subprocess.run([sys.executable, "-m", "genctl", "train", *args, f"hydra.run.dir={run}"], check=True, cwd=REPO)
    m = json.loads((run / "metrics.json").read_text())
    key = "nll_exact" if "nll_exact" in m["test"] else "nll_iwae"
    return {
        "model": name,
        "command": "genctl train " + " ".join(args),
        "params": m["params"],
        "epochs": m["epochs"],
        "steps": m["steps"],
        "nll_nats": m["test"][key]["nats"],
        "bits_per_dim": m["test"][key]["bits_per_dim"],
        "estimator": m["test"][key]["estimator"],
        "train_images_per_s": m["train_images_per_s"],
        "sample_64_s": round(sample_seconds(run), 2),
        "peak_memory_mb": m["peak_memory_mb"],
        "paper_nats": PAPER[name][0],
        "paper": PAPER[name][1],
    }


def table(rows: list[dict], budget: float) -> str:
    lines = [
        f"MNIST 9k/1k split (../shared/data/mnist-9k1k), dynamic binarization, {budget:g} CPU minutes per model, "
        "2 cores; test NLL of best.pt",
        "",
        "| model | params | epochs | test NLL (nats) | bits/dim | estimator | train img/s | 64 samples (s) | peak RSS (MB) | paper (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = f"{r['paper_nats']:.2f}" if r["paper_nats"] else "-"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['epochs']} | {r['nll_nats']:.2f} | {r['bits_per_dim']:.4f} | "
            f"{r['estimator']} | {r['train_images_per_s']:.0f} | {r['sample_64_s']:.1f} | {r['peak_memory_mb']:.0f} | {paper} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist-9k1k"))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--budget", type=float, default=10.0, help="training minutes per model (trainer.max_time)")
    p.add_argument("--k", type=int, default=500, help="importance samples for the VAE's IWAE bound")
    p.add_argument("--out", default=str(REPO / "bench_out" / "models"))
    p.add_argument("extra", nargs="*", help="overrides added to every run, e.g. trainer.epochs=1000")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.models.split(","):
        rows.append(bench(name, Path(a.data).resolve(), a.budget, a.k, out, a.extra))
        print(json.dumps(rows[-1]), flush=True)
        (out / "bench_models.json").write_text(json.dumps({"budget_min": a.budget, "rows": rows}, indent=2) + "\n")
    text = table(rows, a.budget)
    print("\n" + text)
    (out / "bench_models.md").write_text(text + "\n")
    ordered = sorted(rows, key=lambda r: r["nll_nats"])
    print("\nordering (best first): " + " < ".join(f"{r['model']} {r['nll_nats']:.1f}" for r in ordered))
    print(f"written to {out / 'bench_models.json'} and {out / 'bench_models.md'}")


if __name__ == "__main__":
    main()
