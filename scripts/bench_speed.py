"""Where the time goes, measured side by side in one run on this machine (issue 6).

(a) Training images/s on the real MNIST train digits, same model, loss, optimizer and batch:
    genctl's loop (Trainer.run_epoch: progress bar, LR schedule, stop checks, logging) against a
    bare loop over pre-staged tensors, and against the usual torchvision-style loop: a Dataset
    that turns one stored image into a PIL image and back into a tensor per item (what
    torchvision.datasets.MNIST + ToTensor do), batched by a DataLoader (num_workers=0: on 2
    cores a worker process takes its core from the model). All three take eager steps (the
    benchmark rows' trainer.compile is part (d)). The loops run interleaved in rotating order,
    several times, after a few untimed steps; medians are reported. Each loop's data path is
    also timed alone: its share of a step bounds what any loop can gain over another. The conv
    VAE and the PixelCNN are compute-bound on a CPU; the MLP VAE's steps are ~40x shorter.
(b) Sampling 64 digits from the benchmark's PixelCNN and Gated PixelCNN (configs/experiment,
    fresh weights: the time does not depend on them): fast (incremental) against naive (one full
    pass per value), timed in float32; whether both gave the same images for the same seed, in
    float32 (values differing) and in float64.
(c) IWAE evaluation of 1,000 test digits with the default VAE: wall time and peak memory for
    several k, eval.chunk and eval.batch_size (the default chunk and batch first), each in a
    fresh process, so peak memory can be compared.
(d) trainer.compile: training images/s with and without torch.compile of the training step,
    over pre-staged batches, for the default VAE and the benchmark's PixelCNNs and hvae.

Prints the tables and writes JSON (default bench_out/bench_speed.json).
Usage: python scripts/bench_speed.py [--data DIR] [--steps 100] [--repeats 5] [--parts a,b,c,d]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from genctl.config import config_dir
from genctl.data import Batches, load_dataset
from genctl.eval.evaluate import evaluate
from genctl.losses import build_loss
from genctl.models import build_model
from genctl.train.loop import LossStep, NullWriter, Trainer
from genctl.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def config(overrides: list[str]):
    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("train", overrides=overrides)


class PerItemDigits(Dataset):
    """torchvision-style: one stored uint8 image -> PIL image -> float tensor -> Bernoulli draw, per item."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images[:, 0].numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        picture = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).unsqueeze(0)
        return torch.bernoulli(x)


def timed_steps(cfg, batches: Callable[[], object], steps: int, warmup: int, compiled: bool = False) -> float:
    """Images/s of ``steps`` plain training steps (fresh model, same seed) over ``batches()``,
    after ``warmup`` untimed steps (first-call allocations; compilation when ``compiled``)."""
    torch.manual_seed(int(cfg.trainer.seed))
    model = build_model(cfg.model, (1, 28, 28), True)
    step_fn = LossStep(model, build_loss(cfg.loss, model, str(cfg.model.name)))
    if compiled:
        step_fn = torch.compile(step_fn)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    seen, start, stream = 0, 0.0, batches()
    for step in range(warmup + steps):
        if step == warmup:
            seen, start = 0, time.perf_counter()
        x = next(stream, None)
        if x is None:  # a new epoch
            stream = batches()
            x = next(stream)
        out = step_fn(x, step, None)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def genctl_rate(cfg, steps: int, warmup: int) -> float:
    """Images/s of Trainer.run_epoch over ``steps`` steps, after ``warmup`` untimed ones."""
    batch = int(cfg.trainer.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        trainer.writer, trainer._clock, trainer._elapsed_before = NullWriter(), time.monotonic(), 0.0
        trainer.opts = replace(trainer.opts, max_steps=warmup)
        trainer.run_epoch([])
        trainer.opts = replace(trainer.opts, max_steps=warmup + steps)
        done, start = trainer.progress.step, time.perf_counter()
        while trainer.progress.step < warmup + steps:  # across epoch ends, as training does
            trainer.run_epoch([])
        return (trainer.progress.step - done) * batch / (time.perf_counter() - start)


def staged_batches(images: torch.Tensor, batch: int) -> Callable[[], object]:
    """An epoch of shuffled, freshly binarized batches from images already in memory as floats."""
    staged = images.float() / 255

    def epoch():
        order = torch.randperm(len(staged))
        return (torch.bernoulli(staged[order[i : i + batch]]) for i in range(0, len(staged) - batch + 1, batch))

    return epoch


LOOPS = ("genctl (Trainer.run_epoch)", "bare loop, pre-staged tensors", "per-item Dataset + DataLoader")
# the models parts (a) and (d) train, by the name their tables print
SETUPS = {
    "vae (default conv)": ["model=vae", "dataset=mnist"],
    "pixelcnn (benchmark row)": ["experiment=mnist_pixelcnn"],
    "gated_pixelcnn (benchmark row)": ["experiment=mnist_gated_pixelcnn"],
    "hvae (benchmark row)": ["experiment=mnist_hvae"],
    "vae_mlp (benchmark row)": ["experiment=mnist_vae_mlp"],
}


def data_ms(batches: Callable[[], Iterator], n: int = 50) -> float:
    """Milliseconds per batch spent producing ``n`` batches alone, no model: the most a loop
    can gain or lose through its data path."""
    stream, start = batches(), time.perf_counter()
    for _ in range(n):
        next(stream)
    return (time.perf_counter() - start) * 1000 / n


def part_a(name: str, overrides: list[str], steps: int, repeats: int, warmup: int = 5) -> list[dict]:
    """The three loops, interleaved ``repeats`` times in rotating order (the machine's drift hits
    all three alike); the median rate of each, and the median of genctl's rate over each loop's
    within the same repeat. Eager steps for all three (part (d) measures trainer.compile)."""
    cfg = config([*overrides, "trainer.test_at_end=false", "trainer.compile=false"])
    batch = int(cfg.trainer.batch_size)
    images, dynamic = load_dataset(cfg.dataset).train_source()
    bare = staged_batches(images, batch)

    def per_item():
        return iter(DataLoader(PerItemDigits(images), batch_size=batch, shuffle=True, drop_last=True))

    def genctl_batches():
        return iter(Batches(images, batch, shuffle=True, dynamic_binarize=dynamic, generator=torch.Generator().manual_seed(0)))

    runs = {LOOPS[0]: lambda: genctl_rate(cfg, steps, warmup), LOOPS[1]: lambda: timed_steps(cfg, bare, steps, warmup),
            LOOPS[2]: lambda: timed_steps(cfg, per_item, steps, warmup)}
    rates: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for r in range(repeats):
        for loop in LOOPS[r % len(LOOPS) :] + LOOPS[: r % len(LOOPS)]:
            rates[loop].append(runs[loop]())
    median = {loop: float(np.median(r)) for loop, r in rates.items()}
    data = dict(zip(LOOPS, (data_ms(genctl_batches), data_ms(bare), data_ms(per_item))))
    return [
        {"model": name, "batch": batch, "steps": steps, "loop": loop, "images_per_s": median[loop], "runs": rates[loop],
         "genctl_vs": float(np.median(np.divide(rates[LOOPS[0]], rates[loop]))), "data_ms_per_batch": data[loop],
         "data_share": data[loop] / (1000 * batch / median[loop])}
        for loop in LOOPS
    ]


def part_b(name: str) -> dict:
    """Fast against naive sampling, timed in float32. Both compute the same conditionals but sum
    in different orders, so in float32 a draw that lands within a rounding error of its
    probability can flip; equality of the algorithms is checked again in float64."""
    cfg = config([f"experiment=mnist_{name}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), True).eval()

    def draw(fast: bool) -> torch.Tensor:
        torch.manual_seed(1)
        return model.sample(64, fast=fast)

    times, images = {}, {}
    with torch.inference_mode():
        for fast in (True, False):
            start = time.perf_counter()
            images[fast] = draw(fast)
            times[fast] = time.perf_counter() - start
        model.double()
        torch.set_default_dtype(torch.float64)
        try:
            same64 = torch.equal(draw(True), draw(False))
        finally:
            torch.set_default_dtype(torch.float32)
    return {"model": name, "fast_s": times[True], "naive_s": times[False], "speedup": times[False] / times[True],
            "differing_values_float32": int((images[True] != images[False]).sum()), "same_images_float64": same64}


def part_d(name: str, overrides: list[str], steps: int, repeats: int, warmup: int = 5) -> dict:
    """trainer.compile's effect: eager against torch.compile'd training steps, interleaved."""
    cfg = config(overrides)
    images, _ = load_dataset(cfg.dataset).train_source()
    batches = staged_batches(images, int(cfg.trainer.batch_size))
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for compiled in (False, True):
            rates[compiled].append(timed_steps(cfg, batches, steps, warmup, compiled))
    eager, compiled = float(np.median(rates[False])), float(np.median(rates[True]))
    return {"model": name, "batch": int(cfg.trainer.batch_size), "eager": eager, "compiled": compiled,
            "ratio": compiled / eager}


def eval_child(ckpt: str, k: int, chunk: int, batch: int, data: str) -> None:
    """Run in a fresh process: one IWAE evaluation, then print its wall time and peak memory."""
    from genctl.train.checkpoint import load_checkpoint, restore_model

    state = load_checkpoint(Path(ckpt))
    model = restore_model(state, Path(ckpt))
    test = load_dataset(config(["dataset=mnist", f"dataset.root={data}"]).dataset).fixed("test")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    evaluate(model, test, batch, k, chunk, 0)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "before_mb": before}))


def part_c(data: str, settings: list[tuple[int, int, int]]) -> list[dict]:
    """(k, eval.chunk, eval.batch_size) settings, each evaluated in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # a VAE checkpoint to evaluate (weights barely matter for time)
        run = Path(tmp) / "vae"
        subprocess.run([sys.executable, "-m", "genctl", "train", "dataset=mnist", f"dataset.root={data}", "trainer.max_steps=20",
                        "trainer.test_at_end=false", f"hydra.run.dir={run}"], check=True, cwd=REPO, capture_output=True)
        for k, chunk, batch in settings:
            out = subprocess.run([sys.executable, __file__, "--eval-child", str(run / "best.pt"), str(k), str(chunk), str(batch),
                                  "--data", data],
                                 check=True, cwd=REPO, capture_output=True, text=True)
            rows.append({"k": k, "chunk": chunk, "batch": batch, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist-9k1k"))
    p.add_argument("--steps", type=int, default=100, help="timed training steps per loop and repeat in (a)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats in (a) and (d)")
    p.add_argument("--parts", default="a,b,c,d")
    p.add_argument("--out", default=str(REPO / "bench_out" / "bench_speed.json"))
    p.add_argument("--eval-child", nargs=4, metavar=("CKPT", "K", "CHUNK", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.eval_child:
        eval_child(a.eval_child[0], *map(int, a.eval_child[1:]), a.data)
        return
    data = str(Path(a.data).resolve())
    results: dict[str, list] = {}
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    if "a" in a.parts:
        results["training"] = [
            row
            for name, steps in (
                ("vae (default conv)", a.steps),
                ("pixelcnn (benchmark row)", a.steps),
                ("vae_mlp (benchmark row)", 5 * a.steps),  # ~40x shorter steps
            )
            for row in part_a(name, [*SETUPS[name], f"dataset.root={data}"], steps, a.repeats)
        ]
        print(f"\n{a.repeats} interleaved repeats (rotating order) of the steps shown after 5 untimed ones: median rates, "
              "and the median of the ratios within a repeat; data path: producing 50 batches alone\n")
        print("| model | batch | steps | loop | train images/s | genctl / this | data path ms/batch | data path share of a step |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results["training"]:
            print(f"| {r['model']} | {r['batch']} | {r['steps']} | {r['loop']} | {r['images_per_s']:.0f} | {r['genctl_vs']:.3f} | "
                  f"{r['data_ms_per_batch']:.2f} | {100 * r['data_share']:.1f}% |")
    if "b" in a.parts:
        results["sampling"] = [part_b("pixelcnn"), part_b("gated_pixelcnn")]
        print("\n| model | 64 samples fast (s) | naive (s) | speed-up | values differing (float32) | same images (float64) |")
        print("|---|---|---|---|---|---|")
        for r in results["sampling"]:
            print(f"| {r['model']} | {r['fast_s']:.2f} | {r['naive_s']:.2f} | {r['speedup']:.1f}x | "
                  f"{r['differing_values_float32']} of {64 * 28 * 28} | {r['same_images_float64']} |")
    if "c" in a.parts:
        results["iwae_eval"] = part_c(data, [(100, 2, 50), (500, 2, 50), (500, 20, 100), (500, 100, 100)])  # first two: default chunk and batch
        print("\n| k | eval.chunk | eval.batch_size | images per pass | wall (s) | peak RSS (MB) | RSS before (MB) |")
        print("|---|---|---|---|---|---|---|")
        for r in results["iwae_eval"]:
            print(f"| {r['k']} | {r['chunk']} | {r['batch']} | {r['chunk'] * r['batch']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
                  f"{r['before_mb']:.0f} |")
    if "d" in a.parts:
        results["compile"] = [
            part_d(name, [*SETUPS[name], f"dataset.root={data}"], a.steps, a.repeats)
            for name in ("vae (default conv)", "pixelcnn (benchmark row)", "gated_pixelcnn (benchmark row)", "hvae (benchmark row)")
        ]
        print(f"\ntrainer.compile: {a.repeats} interleaved repeats of {a.steps} steps after 5 untimed ones, medians\n")
        print("| model | batch | eager images/s | compiled images/s | compiled / eager |\n|---|---|---|---|---|")
        for r in results["compile"]:
            print(f"| {r['model']} | {r['batch']} | {r['eager']:.0f} | {r['compiled']:.0f} | {r['ratio']:.2f}x |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
