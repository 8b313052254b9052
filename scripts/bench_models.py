"""Every model family under one training-time budget on the real 9,000/1,000 MNIST split (issue 4).

Each row is one saved recipe, `genctl train experiment=mnist_NAME dataset.root=DATA`
(configs/experiment/: the shared protocol in mnist_budget.yaml, the model and the settings chosen
for the budget in mnist_NAME.yaml). best.pt is chosen by validation loss on 1,000 of the 9,000
train digits, then scored on the 1,000 test digits (dynamic binarization protocol: the test set
drawn once from the split seed): exact NLL for autoregressive models, the IWAE bound (k=500) for
the VAE. Sampling time is 64 digits from that checkpoint (fast sampler, in-process).

Prints one Markdown table with the papers' numbers beside it and writes JSON and Markdown
(default bench_out/models/). A run folder that already holds metrics.json is reused with
--reuse, so an interrupted benchmark continues where it stopped.
Usage: python scripts/bench_models.py [--budget 15] [--models fvsbn,nade,...] [--data DIR] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genctl.train.checkpoint import load_checkpoint, restore_model

REPO = Path(__file__).resolve().parents[1]
# rows: the experiment names without their mnist_ prefix (configs/experiment/mnist_*.yaml)
ROWS = ["fvsbn", "nade", "made", "vae", "pixelcnn", "gated_pixelcnn", "pixelrnn"]
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
    state = load_checkpoint(run / "best.pt")
    model = restore_model(state, run / "best.pt").eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        start = time.perf_counter()
        model.sample(n)
        return time.perf_counter() - start


def bench(name: str, data: Path, budget: float | None, out: Path, extra: list[str], reuse: bool) -> dict:
    run = out / name
    args = [f"experiment=mnist_{name}", f"dataset.root={data}", *extra]
    if budget is not None:
        args.append(f"trainer.max_time={budget:g}")
    if not (reuse and (run / "metrics.json").exists()):
        subprocess.run([sys.executable, "-m", "genctl", "train", *args, f"hydra.run.dir={run}"], check=True, cwd=REPO)
    m = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    key = "nll_exact" if "nll_exact" in m["test"] else "nll_iwae"
    return {
        "row": name,
        "model": m["model"],
        "command": "genctl train " + " ".join(args),
        "budget_min": cfg.trainer.max_time,
        "batch_size": cfg.trainer.batch_size,
        "lr": cfg.optim.lr,
        "schedule": cfg.optim.schedule,
        "params": m["params"],
        "epochs": m["epochs"],
        "steps": m["steps"],
        "nll_nats": m["test"][key]["nats"],
        "bits_per_dim": m["test"][key]["bits_per_dim"],
        "estimator": m["test"][key]["estimator"],
        "train_images_per_s": m["train_images_per_s"],
        "sample_64_s": round(sample_seconds(run), 2),
        "peak_memory_mb": m["peak_memory_mb"],
        "paper_nats": PAPER.get(name, (None, ""))[0],
        "paper": PAPER.get(name, (None, ""))[1],
    }


def table(rows: list[dict], budget: float) -> str:
    lines = [
        f"MNIST 9k/1k split (../shared/data/mnist-9k1k), dynamic binarization, {budget:g} training minutes per "
        f"model on {torch.get_num_threads()} CPU threads; test NLL of best.pt",
        "",
        "| experiment | params | epochs | test NLL (nats) | bits/dim | estimator | train img/s | 64 samples (s) | peak RSS (MB) | paper (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = f"{r['paper_nats']:.2f}" if r["paper_nats"] else "-"
        lines.append(
            f"| {r['row']} | {r['params']:,} | {r['epochs']} | {r['nll_nats']:.2f} | {r['bits_per_dim']:.4f} | "
            f"{r['estimator']} | {r['train_images_per_s']:.0f} | {r['sample_64_s']:.1f} | {r['peak_memory_mb']:.0f} | {paper} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist-9k1k"))
    p.add_argument("--models", default=",".join(ROWS), help="experiments to run, without the mnist_ prefix")
    p.add_argument("--budget", type=float, help="training minutes per model (default: the experiments' trainer.max_time)")
    p.add_argument("--out", default=str(REPO / "bench_out" / "models"))
    p.add_argument("--reuse", action="store_true", help="keep runs that already finished (their metrics.json)")
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
    print(f"written to {out / 'bench_models.json'} and {out / 'bench_models.md'}")


if __name__ == "__main__":
    main()
