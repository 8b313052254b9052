"""genctl's MADE against pytorch-generative's, side by side: same split, same budget, same digits.

pytorch-generative (github.com/EugenHotaj/pytorch-generative) is the peer project with the most
complete set of the same models; its `made.reproduce()` trains MADE with one hidden layer of 8,000
units and one mask, Adam at torch's default learning rate, batches of 64, dynamically binarized
MNIST, the loss the summed binary cross-entropy of each image. This script runs both for the same
wall-clock budget on the same 2 cores, one after the other (never at once: they would slow each
other), on the same split (--data: a folder holding MNIST/ in torchvision's layout, e.g. the
9,000 / 1,000 re-split of the official test digits, of which genctl keeps --val for validation),
and scores both on the same test images, binarized once by genctl's protocol (exact NLL in nats:
one mask, so both likelihoods are exact).

- genctl: `genctl train experiment=mnist_made dataset.binarize=dynamic dataset.val_size=VAL
  trainer.clock=wall trainer.max_time=MINUTES`: the saved recipe (cosine decay to the budget's end,
  best.pt by validation loss, its cadences for validation and checkpoints), timed as a whole run.
- peer: its MADE class, imported from a checkout given by --peer (`git clone` it; none of its code
  is in this repository), trained by the loop of its `reproduce()` (Adam(), batch 64, a fresh
  Bernoulli draw of every batch, no validation), for the same wall minutes; its last weights are
  scored. Its batches come from genctl's in-memory loader: its own reads MNIST through
  torchvision, which cannot be imported beside this CPU torch (and would be slower). Its package
  `__init__` imports torchvision and TensorBoard, so only the two modules MADE needs are loaded,
  from their files.

Prints a table and writes JSON (default bench_out/made_peer/).
Usage: python scripts/bench_made_peer.py --data DIR --peer DIR [--minutes 5] [--val 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from genctl.data.datasets import load_dataset
from genctl.data.loader import Batches
from genctl.runs.record import RunRecord
from genctl.runtime import describe_cpu

REPO = Path(__file__).resolve().parent.parent
PEER_BATCH = 64  # made.reproduce()'s batch_size


def peer_made_class(peer: Path) -> type:
    """pytorch-generative's MADE, loaded from its two files without running the package's __init__."""
    package = peer / "pytorch_generative"
    for name, folder in (("pytorch_generative", package), ("pytorch_generative.models", package / "models")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]  # submodules import from here; the package's own imports are skipped
        sys.modules[name] = stub
    for name, file in (
        ("pytorch_generative.models.base", package / "models" / "base.py"),
        ("pytorch_generative.models.autoregressive.made", package / "models" / "autoregressive" / "made.py"),
    ):
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    sys.modules["pytorch_generative.models"].base = sys.modules["pytorch_generative.models.base"]
    return sys.modules["pytorch_generative.models.autoregressive.made"].MADE


def nll_nats(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean exact NLL in nats of binary images ``x`` under a one-mask MADE that returns logits."""
    model.eval()
    with torch.no_grad():
        total = sum(
            F.binary_cross_entropy_with_logits(model(b), b, reduction="none").flatten(1).sum(1).sum().item() for b in x.split(500)
        )
    return total / len(x)


def run_peer(peer: Path, data: Path, val: int, minutes: float, seed: int) -> dict:
    """Train the peer's MADE by its reproduce() loop for ``minutes`` of wall clock; score the test split."""
    torch.manual_seed(seed)
    cfg = OmegaConf.create(
        {"name": "mnist", "root": str(data), "binarize": "dynamic", "val_size": val, "split_seed": 0, "image_size": 28}
    )
    splits = load_dataset(cfg)
    model = peer_made_class(peer)(input_dim=784, hidden_dims=[8000], n_masks=1)
    optimizer = torch.optim.Adam(model.parameters())
    images, dynamic = splits.train_source()
    batches = Batches(images, PEER_BATCH, shuffle=True, dynamic_binarize=dynamic, generator=torch.Generator().manual_seed(seed))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < minutes * 60:
        model.train()
        for x, _ in batches:
            loss = F.binary_cross_entropy_with_logits(model(x), x, reduction="none").flatten(1).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= minutes * 60:
                break
    seconds = time.perf_counter() - start
    return {
        "who": "pytorch-generative MADE [8000], reproduce() loop",
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "train_images_per_s": steps * PEER_BATCH / seconds,
        "test_nll_nats": nll_nats(model, splits.fixed("test")),
        "checkpoint": "last weights",
        "protocol": splits.protocol,
    }


def run_genctl(data: Path, val: int, minutes: float, out: Path, seed: int) -> dict:
    """Train genctl's saved MADE recipe for ``minutes`` of wall clock; its final test scores best.pt."""
    run = out / "genctl"
    args = [
        "experiment=mnist_made",
        f"dataset.root={data}",
        "dataset.binarize=dynamic",
        f"dataset.val_size={val}",
        "trainer.clock=wall",
        f"trainer.max_time={minutes:g}",
        f"trainer.seed={seed}",
        f"hydra.run.dir={run}",
        "overwrite=true",
    ]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genctl", "train", *args], check=True, cwd=REPO)
    seconds = time.perf_counter() - start
    record = RunRecord.read(run)
    return {
        "who": "genctl experiment=mnist_made (MADE [8000], one mask)",
        "params": record.params,
        "steps": record.steps,
        "train_images_per_s": record.train_images_per_s,
        "test_nll_nats": record.best_nll("test").nats,
        "checkpoint": "best.pt by validation loss",
        "outside_steps_share": record.outside_steps_share,
        "process_wall_s": seconds,
        "protocol": record.protocol,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding MNIST/ (torchvision's layout)")
    parser.add_argument("--peer", type=Path, required=True, help="a checkout of github.com/EugenHotaj/pytorch-generative")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes of training, each side")
    parser.add_argument(
        "--val", type=int, default=1000, help="training images genctl keeps aside for validation (the peer trains on the rest)"
    )
    parser.add_argument("--seed", type=int, default=0, help="both sides' initialization, batch order and binarization draws")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "made_peer")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        run_genctl(args.data, args.val, args.minutes, args.out, args.seed),
        run_peer(args.peer, args.data, args.val, args.minutes, args.seed),
    ]
    print(f"MADE, {args.minutes:g} wall minutes each on {describe_cpu()}, torch {torch.__version__}")
    print(f"data: {rows[0]['protocol']}; test NLL exact, nats")
    print("| who | params | steps | train img/s | test NLL (nats) | scored |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["who"], f"{r['params']:,}", f"{r['steps']:,}", f"{r['train_images_per_s']:.0f}", f"{r['test_nll_nats']:.2f}"]
        print(f"| {' | '.join(cells)} | {r['checkpoint']} |")
    result = {"minutes": args.minutes, "cpu": describe_cpu(), "torch": torch.__version__, "rows": rows}
    (args.out / "made_peer.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
