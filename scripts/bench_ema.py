"""The moving average of the weights (trainer.ema) against the trained weights, one benchmark row per family.

Each row trains once, as scripts/bench_models.py trains it (configs/experiment/ROW.yaml: the same
recipe, CPU budget, seed and data), with trainer.ema=DECAY added. The average never feeds back
into training, so last.pt holds both sets of weights after the same steps of the same run: the
optimizer's ("trained", what the row scores with the average off) and their moving average
("averaged"). Both are scored on the same first IMAGES official test images with the row's
evaluation settings (exact NLL; for latent-variable rows the IWAE bound at the benchmark's k,
same seed). The update of the average costs each row part of its budget's steps: the steps column
is what both sets of weights saw. On 2 shared cores benchmarks need an idle machine: run nothing
else meanwhile.

Prints the table and writes JSON (default bench_out/ema/bench_ema.json); an interrupted run
continues with --reuse, which keeps rows whose last.pt exists and whose training ended.
Usage: python scripts/bench_ema.py --data DIR [--rows mnist_made,...] [--decay 0.995] [--images 1000] [--reuse]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from genctl.api import nll
from genctl.data import load_dataset
from genctl.runs.checkpoint import load_checkpoint, load_weights, restore_model
from genctl.runs.folder import RunFolder
from genctl.runs.record import Evaluation, RunRecord

REPO = Path(__file__).resolve().parents[1]
# one row per family: hierarchical VAE, VAE, PixelCNN, MADE, NADE, FVSBN, PixelRNN
ROWS = ["mnist_hvae", "mnist_vae", "mnist_pixelcnn", "mnist_made", "mnist_nade", "mnist_fvsbn", "mnist_pixelrnn_row"]


def train(name: str, data: Path, decay: float, run: Path, reuse: bool) -> None:
    if reuse and RunFolder(run).last.is_file() and RunRecord.read(run).stopped is not None:
        return
    overrides = [f"experiment={name}", f"dataset.root={data}", f"trainer.ema={decay}", "trainer.test_at_end=false"]
    command = [sys.executable, "-m", "genctl", "train", *overrides, f"hydra.run.dir={run}", "overwrite=true"]
    subprocess.run(command, check=True, cwd=REPO)


def score(run: Path, data: Path, images: int) -> dict:
    """Test NLL of last.pt's trained and averaged weights on the first ``images`` test images."""
    path = RunFolder(run).last
    state = load_checkpoint(path)
    averaged = restore_model(state, path).eval()
    trained = copy.deepcopy(averaged)
    load_weights(trained, state, path, averaged=False)
    cfg = OmegaConf.create(state["config"])
    cfg.dataset.root = str(data)
    x = load_dataset(cfg.dataset).fixed("test")[:images]
    e = cfg.eval
    out = {}
    for weights, model in (("trained", trained), ("averaged", averaged)):
        best = Evaluation(
            nll(model, x, k=int(e.k), chunk=int(e.chunk), batch_size=int(e.batch_size), seed=int(e.seed))
        ).best_nll()
        out[weights], out["estimator"] = best.nats, best.estimator
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GENCTL_DATA"), help="folder of MNIST/ ($GENCTL_DATA)")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--decay", type=float, default=0.995, help="trainer.ema (about 1/(1-decay) steps averaged)")
    p.add_argument("--images", type=int, default=1000, help="first test images scored")
    p.add_argument("--out", default=str(REPO / "bench_out" / "ema"))
    p.add_argument("--reuse", action="store_true", help="keep rows whose training already ended")
    a = p.parse_args()
    if not a.data:
        p.error("--data DIR (or $GENCTL_DATA): the folder holding MNIST/")
    data, out, rows = Path(a.data).resolve(), Path(a.out), []
    for name in a.rows.split(","):
        run = out / name
        train(name, data, a.decay, run, a.reuse)
        record = RunRecord.read(run)
        rows.append({"row": name, "steps": record.steps, "images": a.images, **score(run, data, a.images)})
        rows[-1]["averaged_minus_trained"] = rows[-1]["averaged"] - rows[-1]["trained"]
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\ntrainer.ema={a.decay:g}: last.pt's trained and averaged weights, one run per row (its benchmark recipe and "
        f"CPU budget); test NLL in nats on the first {a.images} official test digits (lower is better)\n"
    )
    print("| row | steps | estimator | trained weights | averaged weights | averaged - trained |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['row']} | {r['steps']} | {r['estimator']} | {r['trained']:.2f} | {r['averaged']:.2f} "
            f"| {r['averaged_minus_trained']:+.2f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ema.json").write_text(json.dumps({"decay": a.decay, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
