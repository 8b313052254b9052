"""Train the classifiers whose features genctl's sample-quality metrics use (genctl/eval/features.py).

One small CNN per dataset family, trained on the official training split minus the 10,000 images
held out for calibration (features.HELD_OUT), written as safetensors into genctl/assets. Adam with
a cosine learning-rate decay; half the training images of every batch are binarized (a Bernoulli
draw with p = grey level), so that the features of the binary samples of binarized-MNIST models
mean something. Prints test accuracy on grey-level and on binarized test images, and on the
held-out images.

Usage: nice -n 10 python scripts/train_classifier.py --data DIR [--dataset mnist fashion_mnist] [--epochs 3]
(DIR holds MNIST/raw and FashionMNIST/raw; default $GENCTL_DATA)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch.nn import functional as F

from genctl.data import Batches, load_dataset
from genctl.eval.features import HELD_OUT, Classifier, weights_file

ASSETS = Path(__file__).resolve().parents[1] / "genctl" / "assets"


def accuracy(net: Classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        predicted = torch.cat([net(batch).argmax(1) for batch in x.split(1000)])
    return (predicted == labels).float().mean().item()


def train(name: str, data_dir: str, epochs: int, seed: int, batch_size: int, lr: float) -> None:
    cfg = OmegaConf.create({"name": name, "root": data_dir, "binarize": "none", **HELD_OUT})
    data = load_dataset(cfg)
    torch.manual_seed(seed)
    net = Classifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batches = Batches(data.train, batch_size, shuffle=True, generator=generator, labels=data.labels["train"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    start = time.process_time()
    for epoch in range(epochs):
        for x, y in batches:
            binarize = torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5
            x = torch.where(binarize, torch.bernoulli(x, generator=generator), x)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"{name} epoch {epoch + 1}: last batch loss {loss.item():.4f}")
    net.eval()
    test = data.test.float() / 255.0
    binary = torch.bernoulli(test, generator=torch.Generator().manual_seed(seed))
    results = {
        "test_accuracy": accuracy(net, test, data.labels["test"]),
        "binarized_test_accuracy": accuracy(net, binary, data.labels["test"]),
        "held_out_accuracy": accuracy(net, data.val.float() / 255.0, data.labels["val"]),
    }
    about = {
        "dataset": name,
        "trained_on": f"{len(data.train)} official training images (held out: val_size={HELD_OUT['val_size']}, "
        f"split_seed={HELD_OUT['split_seed']})",
        "epochs": str(epochs),
        "seed": str(seed),
        "script": "scripts/train_classifier.py",
        **{key: f"{value:.4f}" for key, value in results.items()},
    }
    out = ASSETS / weights_file(name)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out), metadata=about)
    params = sum(p.numel() for p in net.parameters())
    print(
        f"{name}: {', '.join(f'{k} {v:.4f}' for k, v in results.items())}; {params:,} weights, "
        f"{out.stat().st_size:,} bytes in {out}; {time.process_time() - start:.0f} s CPU time"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GENCTL_DATA"), help="folder holding MNIST/raw, FashionMNIST/raw")
    p.add_argument("--dataset", nargs="+", default=["mnist", "fashion_mnist"], choices=["mnist", "fashion_mnist"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    a = p.parse_args()
    if not a.data:
        p.error("--data DIR is required (or set GENCTL_DATA)")
    for name in a.dataset:
        train(name, a.data, a.epochs, a.seed, a.batch_size, a.lr)


if __name__ == "__main__":
    main()
