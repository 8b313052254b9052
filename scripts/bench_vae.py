"""VAE likelihood benchmark on the real 9,000/1,000 MNIST split: genctl against a plain PyTorch loop.

Rows, all scored with the IWAE bound (k=500) on the same 1,000 test digits binarized once with
genctl's test seed (dynamic binarization protocol):

  reference   a plain PyTorch loop written here, independent of genctl's model and loop code:
              MLP VAE 784-512-512-32 (ReLU), Adam 1e-3, batch 128, 60 epochs on all 9,000 digits
  genctl-mlp  the same model and schedule through `genctl train` (dataset.val_size=0)
  default     `genctl train model=vae dataset=mnist dataset.root=... trainer.max_time=10`

Prints a Markdown table and writes JSON (default bench_out/bench_vae.json).
Usage: python scripts/bench_vae.py [--data DIR/mnist-9k1k] [--rows reference,genctl-mlp,default]
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
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from genctl.data import load_dataset
from genctl.runs.record import RunRecord

REPO = Path(__file__).resolve().parents[1]


def reference(data_root: str, k: int, seed: int = 0) -> dict:
    """The textbook loop: no genctl model, loss, loop or estimator code."""
    cfg = OmegaConf.create({"name": "mnist", "root": data_root, "binarize": "dynamic", "val_size": 0, "split_seed": 0})
    data = load_dataset(cfg)  # only to read the same IDX files and the same binarized test set
    train = data.train.flatten(1).float() / 255
    test = data.fixed("test").flatten(1)
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 64))
    dec = nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 784))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def log_w(x: torch.Tensor, n: int) -> torch.Tensor:
        mu, logvar = enc(x).chunk(2, -1)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(n, *mu.shape)
        log_q = (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        logits = dec(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        return log_px + log_p - log_q

    start = time.time()
    for _ in range(60):
        for idx in torch.randperm(len(train)).split(128):
            x = torch.bernoulli(train[idx])
            mu, logvar = enc(x).chunk(2, -1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
            loss = (recon + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.time() - start
    with torch.no_grad():
        nll = []
        for x in test.split(100):
            lw = torch.cat([log_w(x, 100) for _ in range(k // 100)])
            nll.append(-(torch.logsumexp(lw, 0) - math.log(k)))
    return {"row": "reference", "epochs": 60, "train_s": round(train_s, 1), "nll_iwae": torch.cat(nll).mean().item()}


def genctl_run(row: str, args: list[str], out: Path, k: int) -> dict:
    run = out / row
    cmd = [sys.executable, "-m", "genctl", "train", *args, f"eval.k={k}", f"hydra.run.dir={run}", "overwrite=true"]
    start = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.time() - start
    record = RunRecord.read(run)
    test = record.evaluations["test"].scalars()
    return {
        "row": row,
        "command": "genctl train " + " ".join(args),
        "epochs": record.epochs,
        "train_s": record.wall_time_s,
        "total_wall_s": round(wall, 1),
        "params": record.params,
        "nll_iwae": test["nll_iwae"],
        "nll_elbo": test["nll_elbo"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a folder holding MNIST/ in torchvision's layout (e.g. the 9k/1k re-split)")
    p.add_argument("--rows", default="reference,genctl-mlp,default")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--max-time", type=float, default=10.0, help="minutes for the default row")
    p.add_argument("--out", default=str(REPO / "bench_out"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["dataset=mnist", f"dataset.root={Path(a.data).resolve()}"]
    rows = []
    for row in a.rows.split(","):
        if row == "reference":
            rows.append(reference(a.data, a.k))
        elif row == "genctl-mlp":
            mlp = [
                "model=vae",
                "model.arch=mlp",
                "model.hidden=[512,512]",
                "model.activation=relu",
                "model.latent_dim=32",
                "optim.lr=1e-3",
                "optim.schedule=constant",
                "trainer.batch_size=128",
                "trainer.epochs=60",
                "dataset.val_size=0",
                "loss.kl_warmup_steps=0",
            ]
            rows.append(genctl_run(row, [*mlp, *data], out, a.k))
        elif row == "default":
            rows.append(genctl_run(row, ["model=vae", *data, f"trainer.max_time={a.max_time:g}"], out, a.k))
        else:
            raise SystemExit(f"unknown row {row}")
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nMNIST 9k/1k split (mnist-9k1k), dynamic binarization, test NLL = IWAE bound k={a.k}, nats\n")
    print("| row | epochs | train s | test NLL (nats) | bits/dim |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['row']} | {r['epochs']} | {r['train_s']} | {r['nll_iwae']:.2f} | {r['nll_iwae'] / (784 * math.log(2)):.4f} |"
        )
    result = {
        "dataset": "mnist-9k1k (9,000 train / 1,000 test), dynamic binarization",
        "estimator": f"IWAE k={a.k}",
        "rows": rows,
    }
    (out / "bench_vae.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out / 'bench_vae.json'}")


if __name__ == "__main__":
    main()
