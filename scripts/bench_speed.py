"""Where the time goes, measured side by side in one run on this machine.

(a) Training images/s on the real MNIST train digits, same model, loss and batch, four loops:
    genctl's (Trainer.fit, with a clock as its only hook, taking genctl's TrainStep as configured:
    trainer.compile=true for the conv VAE and in the PixelCNN recipe, optim.fused from optim=adam);
    a bare loop over pre-staged tensors taking that same TrainStep (genctl's overhead); a per-item
    loop taking that same TrainStep (the data path alone); and the usual torchvision-style loop:
    torchvision.datasets.MNIST + ToTensor reproduced op for op (one PIL image per item) through a
    DataLoader (num_workers=0: on 2 cores a worker process takes its core from the model), with
    the step as plain PyTorch writes it (eager, the optimizer class with only the learning rate
    given, a loss.item() per step). The loops run interleaved in rotating order, several times;
    genctl's timing starts after its first epoch (which carries compilation, and the recompile for
    the epoch's short last batch), the others' after 5 steps; medians are reported. Each data path
    is also timed alone: its share of a step bounds what any loop can gain over another through
    its data.
(b) Sampling 64 digits from the benchmark's PixelCNN and Gated PixelCNN (configs/experiment,
    fresh weights: the time does not depend on them): fast (incremental) against naive (one full
    pass per value), timed in float32; whether both gave the same images for the same seed, in
    float32 (values differing) and in float64.
(c) IWAE evaluation of 1,000 test digits with the default VAE: wall time and peak memory for
    several k, eval.chunk and eval.batch_size (the default chunk and batch first), each in a
    fresh process, its peak memory during the evaluation read from /proc/self (Linux).
(d) trainer.compile: training images/s with and without torch.compile of the training step,
    over pre-staged batches, for the default VAE and the benchmark's PixelCNNs and hvae.
(e) trainer.precision=bf16 (autocast on the CPU) against float32, the same way, for the
    benchmark recipes (each with its own trainer.compile) and the default VAE.
(f) Roofline of the benchmark recipes, float32 and bf16: FLOPs per training image (forward and
    backward of the convolutions and matrix products, a grouped convolution's weight gradient
    counted with its groups, which torch.utils.flop_counter leaves out), images/s of the step as
    configured, the GFLOP/s that makes, and two ceilings measured here: a 2048^3 matrix product,
    and the recipe's own layers run alone at the shapes a step gives them. The share of the
    layers' ceiling is what a step loses around its layers (normalization, activations, the
    optimizer, the framework); the share of the GEMM ceiling, what the layer shapes lose too.

--device cuda runs every part on the GPU (batches staged there, timings synchronized, part (c)'s
peak memory read from the CUDA allocator, the GEMM ceiling at 8192^3); the tables name the
processor or card they ran on.

Prints the tables and writes JSON (default bench_out/bench_speed.json).
Usage: python scripts/bench_speed.py --data DIR [--steps 100] [--repeats 5] [--parts a,b,c,d,e,f]
       [--precisions 32,bf16] [--device cpu|cuda]
(DIR holds MNIST/ in torchvision's layout; default $GENCTL_DATA)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from genctl.config import config_dir
from genctl.data import Batches, load_dataset
from genctl.eval.evaluate import evaluate
from genctl.losses import build_loss
from genctl.models import build_model
from genctl.runs.folder import RunFolder
from genctl.runs.progress import Progress
from genctl.runtime import describe_cpu
from genctl.train.build import build_step, build_trainer, trainer_options
from genctl.train.hooks import Hook
from genctl.train.loop import Trainer
from genctl.train.optim import OPTIMIZERS, build_optimizer
from genctl.train.step import LossStep

REPO = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cpu")  # where every part runs: --device


def sync() -> None:
    """Wait for the device's queued work, so a clock read after it has seen that work end."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def device_name() -> str:
    if DEVICE.type == "cuda":
        return torch.cuda.get_device_name(DEVICE)
    return describe_cpu()


def config(overrides: list[str]):
    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("train", overrides=overrides)


class TorchvisionMNIST(Dataset):
    """torchvision.datasets.MNIST's __getitem__ with transforms.ToTensor() and a Bernoulli draw,
    op for op (torchvision itself cannot be imported next to this machine's CPU torch)."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.is_floating_point():  # a fixed binarization's 0/1 floats, as the raw file's bytes 0/255
            images = (images * 255).round().to(torch.uint8)
        self.data, self.targets = images[:, 0], torch.zeros(len(images), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[i], int(self.targets[i])
        img = Image.fromarray(img.numpy(), mode="L")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))  # ToTensor from here
        x = x.view(img.size[1], img.size[0], len(img.getbands())).permute((2, 0, 1)).contiguous()
        x = x.to(dtype=torch.get_default_dtype()).div(255)
        return torch.bernoulli(x), target


def timed_steps(cfg, batches: Callable[[], Iterator], steps: int, warmup: int, plain: bool = False) -> float:
    """Images/s of ``steps`` training steps (fresh model, same seed) over ``batches()``, after
    ``warmup`` untimed ones (first-call allocations; compilation where trainer.compile). The step
    is genctl's TrainStep as configured, or with ``plain`` the step as plain PyTorch writes it:
    eager, the optimizer class given only the learning rate (on a CPU, torch's Adam then loops
    over the tensors) and the loss read every step."""
    torch._dynamo.reset()  # every compiled run starts cold alike, never at Dynamo's recompile limit
    torch.manual_seed(int(cfg.trainer.seed))
    model = build_model(cfg.model, (1, 28, 28), True).to(DEVICE)
    loss_fn = build_loss(cfg.loss, model, str(cfg.model.name))
    if plain:
        optimizer = OPTIMIZERS.get(str(cfg.optim.name))(model.parameters(), lr=float(cfg.optim.lr))
        loss_step = LossStep(model, loss_fn)

        def step(x: torch.Tensor, progress: Progress) -> None:
            out = loss_step(x, progress.step, None)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            out["loss"].item()  # the per-step read (a device sync) of a running-loss printout
            progress.step += 1
    else:
        train_step = build_step(trainer_options(cfg), model, loss_fn, build_optimizer(cfg.optim, model.parameters()), DEVICE)

        def step(x: torch.Tensor, progress: Progress) -> None:
            train_step(x, None, progress)

    seen, start, stream, progress = 0, 0.0, batches(), Progress()
    while progress.step < warmup + steps:
        if progress.step == warmup:
            sync()
            seen, start = 0, time.perf_counter()
        x = next(stream, None)
        if x is None:  # a new epoch
            stream = batches()
            x = next(stream)
        step(x.to(DEVICE, non_blocking=True), progress)
        seen += len(x)
    sync()
    return seen / (time.perf_counter() - start)


class StepClock(Hook):
    """The clock and step count at each epoch's end: the first epoch (compilation, and the
    recompile for its short last batch) is left out of the timing."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def on_epoch_end(self, trainer: Trainer) -> None:
        sync()
        self.marks.append((time.perf_counter(), trainer.progress.step))


def genctl_rate(cfg, steps: int, steps_per_epoch: int) -> float:
    """Images/s of genctl's training loop (Trainer.fit, no hooks but the clock) over ``steps``
    steps after a first, untimed epoch; no validation, checkpoint or images until the last step."""
    torch._dynamo.reset()
    clock = StepClock()
    never = 10**9
    overrides = {"max_steps": steps_per_epoch + steps, "val_every": never, "ckpt_every": never, "sample_every": never}
    overrides["device"] = str(DEVICE)
    cfg = OmegaConf.merge(cfg, {"trainer": overrides})
    with tempfile.TemporaryDirectory() as tmp:
        build_trainer(cfg, Path(tmp), hooks=[clock])[0].fit()
    (start, first), (end, last) = clock.marks[0], clock.marks[-1]
    return (last - first) * int(cfg.trainer.batch_size) / (end - start)


def staged_batches(images: torch.Tensor, batch: int) -> Callable[[], object]:
    """An epoch of shuffled, freshly binarized batches from images already on the device as floats."""
    staged = images.to(DEVICE).float() / 255

    def epoch():
        order = torch.randperm(len(staged), device=DEVICE)
        return (torch.bernoulli(staged[order[i : i + batch]]) for i in range(0, len(staged) - batch + 1, batch))

    return epoch


LOOPS = (
    "genctl (Trainer.fit)",
    "bare loop, pre-staged tensors",
    "per-item Dataset + DataLoader",
    "usual torchvision-style loop",
)
TARGETS = {LOOPS[1]: 0.95, LOOPS[3]: 1.05}  # genctl / that loop: at least this
# the models parts (a) and (d) train, by the name their tables print
SETUPS = {
    "vae (default conv)": ["model=vae", "dataset=mnist"],
    "pixelcnn (benchmark row)": ["experiment=mnist_pixelcnn"],
    "gated_pixelcnn (benchmark row)": ["experiment=mnist_gated_pixelcnn"],
    "hvae (benchmark row)": ["experiment=mnist_hvae"],
    "vae_mlp (benchmark row)": ["experiment=mnist_vae_mlp"],
    "made (benchmark row)": ["experiment=mnist_made"],
    "pixelrnn_row (benchmark row)": ["experiment=mnist_pixelrnn_row"],
}
# the recipes parts (d) and (e) switch compilation and bf16 in (each with its own compile setting in (e))
RECIPES = ["pixelcnn (benchmark row)", "gated_pixelcnn (benchmark row)", "hvae (benchmark row)", "pixelrnn_row (benchmark row)"]


def data_ms(batches: Callable[[], Iterator], n: int = 50) -> float:
    """Milliseconds per batch spent producing ``n`` batches alone, no model: the most a loop
    can gain or lose through its data path."""
    stream, start = batches(), time.perf_counter()
    for _ in range(n):
        next(stream).to(DEVICE, non_blocking=True)
    sync()
    return (time.perf_counter() - start) * 1000 / n


def part_a(name: str, overrides: list[str], steps: int, repeats: int, warmup: int = 5) -> list[dict]:
    """The four loops, interleaved ``repeats`` times in rotating order (the machine's drift hits
    them alike); the median rate of each, and the median of genctl's rate over each loop's within
    the same repeat."""
    cfg = config([*overrides, "trainer.test_at_end=false"])
    batch, compiled = int(cfg.trainer.batch_size), bool(cfg.trainer.compile)
    images, dynamic = load_dataset(cfg.dataset).train_source()
    bare = staged_batches(images, batch)

    def per_item():
        return (x for x, _ in DataLoader(TorchvisionMNIST(images), batch_size=batch, shuffle=True, drop_last=True))

    def genctl_batches():
        generator = torch.Generator(DEVICE).manual_seed(0)
        return (x for x, _ in Batches(images.to(DEVICE), batch, shuffle=True, dynamic_binarize=dynamic, generator=generator))

    runs = {
        LOOPS[0]: lambda: genctl_rate(cfg, steps, -(-len(images) // batch)),
        LOOPS[1]: lambda: timed_steps(cfg, bare, steps, warmup),
        LOOPS[2]: lambda: timed_steps(cfg, per_item, steps, warmup),
        LOOPS[3]: lambda: timed_steps(cfg, per_item, steps, warmup, plain=True),
    }
    rates: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for r in range(repeats):
        for loop in LOOPS[r % len(LOOPS) :] + LOOPS[: r % len(LOOPS)]:
            rates[loop].append(runs[loop]())
    median = {loop: float(np.median(r)) for loop, r in rates.items()}
    item_ms = data_ms(per_item)
    data = dict(zip(LOOPS, (data_ms(genctl_batches), data_ms(bare), item_ms, item_ms)))
    configured = f"compile {'on' if compiled else 'off'}, {cfg.optim.name} fused={cfg.optim.get('fused', False)}"
    step = dict(
        zip(LOOPS, (configured, configured, configured, f"eager, torch.optim.{OPTIMIZERS.get(str(cfg.optim.name)).__name__}(lr)"))
    )
    return [
        {
            "model": name,
            "batch": batch,
            "steps": steps,
            "loop": loop,
            "step": step[loop],
            "images_per_s": median[loop],
            "runs": rates[loop],
            "genctl_vs": float(np.median(np.divide(rates[LOOPS[0]], rates[loop]))),
            "data_ms_per_batch": data[loop],
            "data_share": data[loop] / (1000 * batch / median[loop]),
        }
        for loop in LOOPS
    ]


def part_b(name: str) -> dict:
    """Fast against naive sampling, timed in float32. Both compute the same conditionals but sum
    in different orders, so in float32 a draw that lands within a rounding error of its
    probability can flip; equality of the algorithms is checked again in float64."""
    cfg = config([f"experiment=mnist_{name}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), True).to(DEVICE).eval()

    def draw(fast: bool) -> torch.Tensor:
        torch.manual_seed(1)
        return model.sample(64, fast=fast)

    times, images = {}, {}
    with torch.inference_mode():
        for fast in (True, False):
            sync()
            start = time.perf_counter()
            images[fast] = draw(fast)
            sync()
            times[fast] = time.perf_counter() - start
        model.double()
        torch.set_default_dtype(torch.float64)
        try:
            same64 = torch.equal(draw(True), draw(False))
        finally:
            torch.set_default_dtype(torch.float32)
    return {
        "model": name,
        "fast_s": times[True],
        "naive_s": times[False],
        "speedup": times[False] / times[True],
        "differing_values_float32": int((images[True] != images[False]).sum()),
        "same_images_float64": same64,
    }


def part_switch(name: str, overrides: list[str], switch: str, values: tuple[str, str], steps: int, repeats: int) -> dict:
    """One trainer switch's effect on training images/s, off against on over the same pre-staged
    batches, interleaved: trainer.compile (eager, compiled) in (d), trainer.precision (32, bf16) in (e)."""
    configs = {value: config([*overrides, f"{switch}={value}"]) for value in values}
    cfg = configs[values[0]]
    images, _ = load_dataset(cfg.dataset).train_source()
    batches = staged_batches(images, int(cfg.trainer.batch_size))
    rates: dict[str, list[float]] = {value: [] for value in values}
    for _ in range(repeats):
        for value in values:
            rates[value].append(timed_steps(configs[value], batches, steps, warmup=5))
    off, on = (float(np.median(rates[value])) for value in values)
    batch = int(cfg.trainer.batch_size)
    return {"model": name, "batch": batch, "switch": switch, "values": list(values), "off": off, "on": on, "ratio": on / off}


LAYERS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
ROOFLINE = ["pixelcnn (benchmark row)", "gated_pixelcnn (benchmark row)", "pixelrnn_row (benchmark row)", "vae (default conv)"]
ROOFLINE += ["hvae (benchmark row)", "made (benchmark row)"]


def conv_backward_flops(
    grad_out, x, w, _bias, _stride, _padding, _dilation, transposed, _out_pad, _groups, output_mask, **_
) -> int:
    """A convolution's backward (its arguments as shapes): the input gradient and the weight
    gradient each cost what the forward costs, groups included. The stock formula counts the
    weight gradient as if the convolution were dense, ~4x too much for a depthwise 5x5."""
    forward = 2 * math.prod(x if transposed else grad_out) * math.prod(w[1:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def counted_flops(run: Callable[[], None]) -> int:
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}) as counter:
        run()
    return counter.get_total_flops()


def gemm_size() -> int:
    """The ceiling's matrix size: 2048^3 fills a CPU's cores; a GPU needs 8192^3 to leave launch costs behind."""
    return 8192 if DEVICE.type == "cuda" else 2048


def gemm_gflops(dtype: torch.dtype, repeats: int = 10) -> float:
    n = gemm_size()
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    for _ in range(2):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def layers_alone(calls: list[tuple[nn.Module, torch.Size]], autocast: bool, repeats: int = 5) -> tuple[int, float]:
    """FLOPs and seconds of every layer call of one step run alone: forward and backward at the
    call's input shape, the layer's own weights, inputs that need their gradient."""
    flops, seconds = 0, 0.0
    for module, shape in calls:
        x = torch.randn(shape, requires_grad=True, device=DEVICE)

        def run(module=module, x=x) -> None:
            with torch.autocast(DEVICE.type, torch.bfloat16, enabled=autocast):
                y = module(x)
            y.float().sum().backward()

        flops += counted_flops(run)
        run()
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        sync()
        seconds += (time.perf_counter() - start) / repeats
    return flops, seconds


def roofline(name: str, overrides: list[str], precision: str, steps: int, repeats: int) -> dict:
    """The step's FLOPs per image, its images/s over pre-staged batches (median of ``repeats``)
    at ``precision`` (32 or bf16), and its shares of the two ceilings."""
    cfg = config([*overrides, f"trainer.precision={precision}"])
    batch, autocast = int(cfg.trainer.batch_size), precision == "bf16"
    images, _ = load_dataset(cfg.dataset).train_source()
    batches = staged_batches(images, batch)
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), True).to(DEVICE)
    loss_step = LossStep(model, build_loss(cfg.loss, model, str(cfg.model.name)))
    x = next(batches())
    calls: list[tuple[nn.Module, torch.Size]] = []
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0].shape))) for m in layers]

    def step() -> None:
        with torch.autocast(DEVICE.type, torch.bfloat16, enabled=autocast):
            out = loss_step(x, 10**6, None)  # past every warm-up
        out["loss"].backward()

    flops = counted_flops(step) / batch
    for hook in hooks:
        hook.remove()
    layer_flops, layer_seconds = layers_alone(calls, autocast)
    rate = float(np.median([timed_steps(cfg, batches, steps, warmup=5) for _ in range(repeats)]))
    achieved = rate * flops / 1e9
    alone = layer_flops / layer_seconds / 1e9 if calls else math.nan  # no module layers (MADE's masked products)
    gemm = gemm_gflops(torch.bfloat16 if autocast else torch.float32)
    return {
        "model": name,
        "precision": precision,
        "batch": batch,
        "compile": bool(cfg.trainer.compile),
        "mflops_per_image": flops / 1e6,
        "images_per_s": rate,
        "achieved_gflops": achieved,
        "layers_gflops": alone,
        "gemm_gflops": gemm,
        "share_of_layers": achieved / alone,
        "share_of_gemm": achieved / gemm,
    }


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB. Not getrusage's ru_maxrss: Linux carries
    that across exec, so a child spawned by this large process would start at its parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def eval_child(ckpt: str, k: int, chunk: int, batch: int, data: str) -> None:
    """Run in a fresh process: one IWAE evaluation, then print its wall time, the memory held
    before it (model, data, libraries) and the peak during it."""
    from genctl.runs.checkpoint import load_checkpoint, restore_model

    state = load_checkpoint(Path(ckpt))
    model = restore_model(state, Path(ckpt)).to(DEVICE)
    test = load_dataset(config(["dataset=mnist", f"dataset.root={data}"]).dataset).fixed("test")[:1000].to(DEVICE)
    if DEVICE.type == "cuda":  # the allocator's own count: RSS does not see the card's memory
        torch.cuda.reset_peak_memory_stats(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE) / 2**20
    else:
        Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current RSS
        before = memory_mb("VmRSS")
    start = time.perf_counter()
    evaluate(model, test, batch, k, chunk, 0)
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else memory_mb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "before_mb": before}))


def part_c(data: str, settings: list[tuple[int, int, int]]) -> list[dict]:
    """(k, eval.chunk, eval.batch_size) settings, each evaluated in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # a VAE checkpoint to evaluate (weights barely matter for time)
        run = Path(tmp) / "vae"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "genctl",
                "train",
                "dataset=mnist",
                f"dataset.root={data}",
                "trainer.max_steps=20",
                "trainer.test_at_end=false",
                f"hydra.run.dir={run}",
            ],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        for k, chunk, batch in settings:
            out = subprocess.run(
                [sys.executable, __file__, "--eval-child", str(RunFolder(run).best), str(k), str(chunk), str(batch)]
                + ["--data", data, "--device", str(DEVICE)],
                check=True,
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            rows.append({"k": k, "chunk": chunk, "batch": batch, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GENCTL_DATA"), help="folder holding MNIST/ ($GENCTL_DATA)")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per loop and repeat in (a)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats in (a) and (d)")
    p.add_argument("--parts", default="a,b,c,d,e,f")
    p.add_argument("--precisions", default="32,bf16", help="trainer.precision values of the roofline (f)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where every part runs")
    p.add_argument("--out", default=str(REPO / "bench_out" / "bench_speed.json"))
    p.add_argument("--eval-child", nargs=4, metavar=("CKPT", "K", "CHUNK", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    global DEVICE
    DEVICE = torch.device(a.device)
    if a.eval_child:
        eval_child(a.eval_child[0], *map(int, a.eval_child[1:]), a.data)
        return
    if not a.data:
        p.error("--data DIR (or $GENCTL_DATA): the folder holding MNIST/")
    data = str(Path(a.data).resolve())
    results: dict[str, object] = {"device": device_name(), "torch": torch.__version__}
    print(f"{results['device']}, torch {torch.__version__}")
    if "a" in a.parts:
        results["training"] = [
            row
            for name, steps, extra in (
                ("vae (default conv)", a.steps, ["trainer.compile=true"]),  # as the PixelCNN recipe compiles
                ("pixelcnn (benchmark row)", a.steps, []),
                ("vae_mlp (benchmark row)", 5 * a.steps, []),  # ~40x shorter steps
                ("made (benchmark row)", 5 * a.steps, []),  # as short: the loop's own cost shows most here
            )
            for row in part_a(name, [*SETUPS[name], *extra, f"dataset.root={data}"], steps, a.repeats)
        ]
        print(
            f"\n{a.repeats} interleaved repeats (rotating order) of the steps shown: median rates, and the median of "
            "the ratios within a repeat; data path: producing 50 batches alone\n"
        )
        print(
            "| model | batch | steps | loop | step | train images/s | genctl / this | data path ms/batch "
            "| data path share of a step |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results["training"]:
            print(
                f"| {r['model']} | {r['batch']} | {r['steps']} | {r['loop']} | {r['step']} | {r['images_per_s']:.0f} | "
                f"{r['genctl_vs']:.3f} | {r['data_ms_per_batch']:.2f} | {100 * r['data_share']:.1f}% |"
            )
        print()
        for r in results["training"]:
            if r["loop"] in TARGETS:
                verdict = "holds" if r["genctl_vs"] >= TARGETS[r["loop"]] else "FAILS"
                print(f"{r['model']}: genctl / {r['loop']} = {r['genctl_vs']:.3f}, target >= {TARGETS[r['loop']]} -> {verdict}")
    if "b" in a.parts:
        results["sampling"] = [part_b("pixelcnn"), part_b("gated_pixelcnn")]
        print("\n| model | 64 samples fast (s) | naive (s) | speed-up | values differing (float32) | same images (float64) |")
        print("|---|---|---|---|---|---|")
        for r in results["sampling"]:
            print(
                f"| {r['model']} | {r['fast_s']:.2f} | {r['naive_s']:.2f} | {r['speedup']:.1f}x | "
                f"{r['differing_values_float32']} of {64 * 28 * 28} | {r['same_images_float64']} |"
            )
    if "c" in a.parts:
        results["iwae_eval"] = part_c(
            data, [(100, 2, 50), (500, 2, 50), (500, 20, 100), (500, 100, 100)]
        )  # first two: default chunk and batch
        memory = "CUDA allocated" if DEVICE.type == "cuda" else "RSS"
        print(
            f"\n| k | eval.chunk | eval.batch_size | images per pass | wall (s) | {memory} before (MB) "
            f"| peak {memory} during it (MB) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in results["iwae_eval"]:
            print(
                f"| {r['k']} | {r['chunk']} | {r['batch']} | {r['chunk'] * r['batch']} | {r['seconds']:.1f} "
                f"| {r['before_mb']:.0f} | {r['peak_mb']:.0f} |"
            )
    for part, key, switch, values, names in (
        ("d", "compile", "trainer.compile", ("false", "true"), ["vae (default conv)", *RECIPES[:3]]),
        ("e", "bf16", "trainer.precision", ("32", "bf16"), [*RECIPES, "vae (default conv)"]),
    ):
        if part not in a.parts:
            continue
        results[key] = [
            part_switch(name, [*SETUPS[name], f"dataset.root={data}"], switch, values, a.steps, a.repeats) for name in names
        ]
        print(f"\n{switch}: {a.repeats} interleaved repeats of {a.steps} steps after 5 untimed ones, medians\n")
        print(f"| model | batch | images/s at {values[0]} | images/s at {values[1]} | ratio |\n|---|---|---|---|---|")
        for r in results[key]:
            print(f"| {r['model']} | {r['batch']} | {r['off']:.0f} | {r['on']:.0f} | {r['ratio']:.2f}x |")
    if "f" in a.parts:
        results["roofline"] = [
            roofline(name, [*SETUPS[name], f"dataset.root={data}"], precision, a.steps, a.repeats)
            for name in ROOFLINE
            for precision in a.precisions.split(",")
        ]
        n = gemm_size()
        print(
            f"\nRoofline: {a.steps} steps after 5 untimed ones, median of {a.repeats}; FLOPs of convolutions and matrix "
            f"products, forward and backward; ceilings measured now: a {n}^3 GEMM, and the recipe's layers alone at its shapes\n"
        )
        print(
            "| recipe | precision | compile | MFLOPs per image | images/s | achieved GFLOP/s | its layers alone GFLOP/s "
            "| GEMM GFLOP/s | share of layers | share of GEMM |\n|---|---|---|---|---|---|---|---|---|---|"
        )
        for r in results["roofline"]:
            print(
                f"| {r['model']} | {r['precision']} | {'on' if r['compile'] else 'off'} | {r['mflops_per_image']:.1f} | "
                f"{r['images_per_s']:.0f} | {r['achieved_gflops']:.1f} | {r['layers_gflops']:.1f} | {r['gemm_gflops']:.0f} | "
                f"{100 * r['share_of_layers']:.0f}% | {100 * r['share_of_gemm']:.0f}% |"
            )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
