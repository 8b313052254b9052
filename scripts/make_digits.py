"""Rewrite the embedded digits (genctl/data/assets/digits, ``dataset=digits``) from official MNIST.

Per class, a seeded random choice of 200 official training digits and 50 official test digits
(2,000 / 500 in all, balanced over the ten classes), kept in their official order and written in
MNIST's own IDX layout, gzipped without a timestamp so the files are reproducible byte for byte.
Train and test come from the official train and test sets, as every other MNIST split does.

Usage: python scripts/make_digits.py --data DIR   (DIR holds MNIST/raw)
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

from genctl.data.idx import read_mnist_layout

OUT = Path(__file__).resolve().parents[1] / "genctl" / "data" / "assets" / "digits" / "MNIST" / "raw"
PER_CLASS = {"train": 200, "test": 50}
SEED = 0


def choose(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` digits of every class, in increasing order."""
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picked))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the folder that holds MNIST/raw (official files)")
    args = p.parse_args()
    official = read_mnist_layout(Path(args.data), "MNIST", "mnist")
    rng = np.random.default_rng(SEED)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = (t.numpy() for t in official[split])
        index = choose(labels, PER_CLASS[split], rng)
        write_idx(OUT / f"{prefix}-images-idx3-ubyte.gz", images[index, 0])
        write_idx(OUT / f"{prefix}-labels-idx1-ubyte.gz", labels[index])
        print(f"{split}: {len(index)} digits, official indices {index[:5].tolist()} ... {index[-3:].tolist()}")


if __name__ == "__main__":
    main()
