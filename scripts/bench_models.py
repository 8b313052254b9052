"""Every model family under one CPU budget, on the standard protocols, with the papers' numbers beside.

Two tables, each row one saved recipe `genctl train experiment=NAME dataset.root=DATA`
(configs/experiment/: the shared budget in bench.yaml, the protocol, model and settings of a row
in NAME.yaml):

- Table 1, binarized MNIST (rows mnist_*): test NLL in nats on the official 10,000 test digits.
  Each row trains under its paper's protocol: the autoregressive rows on the fixed binarization
  (dataset=binarized_mnist: 50,000 / 10,000 / 10,000), the VAE rows on dynamic binarization
  (dataset=dynamic_mnist: 59,000 / 1,000 / 10,000).
- Table 2, Fashion-MNIST 8-bit (rows fashion_*): bits/dim on the official 10,000 test images,
  with a uniform model's 8.0 as the sanity line.

Every row trains for the same CPU time (bench.yaml: trainer.max_time on trainer.clock=cpu, the
process's CPU time over its threads), keeps best.pt by validation loss and scores the test split:
exact NLL for autoregressive models, the IWAE bound for latent-variable ones (bench.yaml's k on
all test images, and k=1000 beside it on the first SUBSET test images to show the gap). Sampling
time is 64 images from best.pt (fast sampler, in-process). Sample quality: classifier-feature FID,
precision and recall of QUALITY_N samples against as many test images (genctl.eval.quality), with
the table's floor (held-out real images) and ceiling (an untrained VAE's samples) beside them.

Prints the tables and writes JSON and Markdown (default bench_out/models/); with --results DIR
also the page DIR/RESULTS.md with each row's command and a grid of its 64 samples
(DIR/results/ROW.png), followed by DIR/results/history.md (earlier tables, kept for the record).
A run folder that already holds metrics.json is reused with --reuse, so an interrupted benchmark
continues where it stopped, and --reuse alone regenerates the tables and the page.
Usage: python scripts/bench_models.py --data DIR [--rows mnist_fvsbn,...] [--budget 10] [--reuse] [--results docs]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genctl.data import DataSplits, load_dataset
from genctl.eval.evaluate import evaluate
from genctl.eval.features import feature_extractor
from genctl.eval.quality import calibration, sample_quality
from genctl.eval.report import label_estimates
from genctl.images import save_grid
from genctl.models import build_model
from genctl.models.base import GenerativeModel, LatentLikelihood
from genctl.runs.checkpoint import load_checkpoint, restore_model
from genctl.runs.folder import RunFolder
from genctl.runs.record import FILENAME, RunRecord

REPO = Path(__file__).resolve().parents[1]
TABLES = {
    "mnist": [
        "mnist_fvsbn",
        "mnist_nade",
        "mnist_made",
        "mnist_pixelcnn",
        "mnist_gated_pixelcnn",
        "mnist_pixelrnn_row",
        "mnist_pixelrnn_diag",
        "mnist_vae_mlp",
        "mnist_vae",
        "mnist_hvae",
        "mnist_hvae_1group",
    ],
    "fashion": [
        "fashion_pixelcnn",
        "fashion_gated_pixelcnn",
        "fashion_pixelrnn_row",
        "fashion_pixelrnn_diag",
        "fashion_vae",
        "fashion_hvae",
    ],
}
FIXED, DYNAMIC = "fixed binarization", "dynamic binarization"
# Test NLL in nats on binarized MNIST from the papers (60,000 training digits, GPU budgets): the
# number, the paper and the model it belongs to, and its protocol.
PAPER = {
    "mnist_fvsbn": (97.45, "Larochelle & Murray 2011", FIXED),
    "mnist_nade": (88.86, "Larochelle & Murray 2011, 500 hidden units", FIXED),
    "mnist_made": (88.40, "Germain et al. 2015, one hidden layer, one mask", FIXED),
    "mnist_pixelcnn": (81.30, "van den Oord et al. 2016a", FIXED),
    "mnist_pixelrnn_row": (80.54, "van den Oord et al. 2016a, Row LSTM", FIXED),
    "mnist_pixelrnn_diag": (79.20, "van den Oord et al. 2016a, Diagonal BiLSTM (7 layers of h=16)", FIXED),
    "mnist_vae_mlp": (86.76, "Burda et al. 2016, VAE of one stochastic layer (IWAE bound, k=5000)", DYNAMIC),
    "mnist_hvae": (78.01, "Vahdat & Kautz 2020, NVAE", DYNAMIC),
}
NO_PAPER = {
    "mnist_gated_pixelcnn": "the Gated PixelCNN paper reports no MNIST number",
    "mnist_vae": "genctl's conv VAE: no paper number",
    "mnist_hvae_1group": "ablation of mnist_hvae: one latent group",
}
ABLATIONS = {"mnist_hvae_1group"}  # rows that cut a family down to test one of its ideas: not families of their own
SUBSET, TIGHT_K = 200, 1000  # latent rows: IWAE k=1000 on the first SUBSET test images, beside the table's k
SIDE_BY_SIDE = ("vae", "hvae", "hvae_1group", "gated_pixelcnn")  # rows whose samples the page shows together
QUALITY_N = 5000  # samples per row for sample quality, and images per calibration line


def sample_seconds(run: Path, n: int = 64) -> float:
    """Time to draw ``n`` images from best.pt, measured once per run (sample_64.json) and the
    grid written beside it (samples_best.png), so regenerating the tables does not re-time."""
    record = run / "sample_64.json"
    if record.is_file() and (run / "samples_best.png").is_file():
        return json.loads(record.read_text())["seconds"]
    best = RunFolder(run).best
    state = load_checkpoint(best)
    model = restore_model(state, best).eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        start = time.perf_counter()
        images = model.sample(n)
        seconds = time.perf_counter() - start
    save_grid(images, run / "samples_best.png")
    record.write_text(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}) + "\n")
    return seconds


def open_row(run: Path, data: Path) -> tuple[GenerativeModel, DataSplits, DictConfig]:
    """best.pt's model, the row's data (read from ``data``) and its training config."""
    state = load_checkpoint(RunFolder(run).best)
    cfg = OmegaConf.create(state["config"])
    cfg.dataset.root = str(data)
    return restore_model(state, RunFolder(run).best), load_dataset(cfg.dataset), cfg


def tight_subset(run: Path, data: Path) -> dict | None:
    """A latent-variable row's IWAE bound on the first SUBSET test images at the table's k and at
    k=1000 (same images, same evaluation seed): how much the table's smaller k gives away.
    Computed once per run (subset.json); None for exact likelihoods."""
    cache = run / "subset.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    model, splits, cfg = open_row(run, data)
    if not isinstance(model, LatentLikelihood):
        return None
    x = splits.fixed("test")[:SUBSET]
    e = cfg.eval
    out: dict = {"images": SUBSET}
    for k in (int(e.k), TIGHT_K):
        start = time.perf_counter()
        means = evaluate(model, x, int(e.batch_size), k, int(e.chunk), int(e.seed), compile=bool(e.get("compile", False)))
        metrics = label_estimates(means, model, k)
        out[f"k{k}"] = {"nats": metrics["nll_iwae"]["nats"], "seconds": round(time.perf_counter() - start, 1)}
    cache.write_text(json.dumps(out) + "\n")
    return out


def row_quality(run: Path, data: Path) -> dict:
    """Classifier-feature FID, precision and recall of QUALITY_N samples of best.pt against as many
    test images (genctl.eval.quality), computed once per run (quality.json)."""
    cache = run / "quality.json"
    if not cache.is_file():
        model, splits, _ = open_row(run, data)
        found = sample_quality(model, splits.fixed("test"), feature_extractor(splits.name), QUALITY_N, 0, 500)
        cache.write_text(json.dumps(found) + "\n")
    return json.loads(cache.read_text())


def calibration_lines(kind: str, rows: list[dict], data: Path, out: Path) -> dict:
    """The table's sample-quality scale at QUALITY_N images: held-out real images (the floor) and
    an untrained default VAE's samples (the ceiling), for the first row's data protocol."""
    cache = out / f"calibration_{kind}.json"
    if not cache.is_file():
        _, splits, cfg = open_row(Path(rows[0]["run"]), data)
        vae = OmegaConf.load(REPO / "configs" / "model" / "vae.yaml")
        del vae["defaults"]
        torch.manual_seed(0)
        untrained = build_model(vae, splits.shape, splits.binary)
        cache.write_text(json.dumps(calibration(cfg.dataset, untrained, QUALITY_N, 0)) + "\n")
    return json.loads(cache.read_text())


def busy_cores(seconds: float = 2.0) -> float:
    """Cores other processes keep busy now, from two reads of /proc/stat (0 where it is absent).
    Measured rather than read off the load average, which still remembers this script's own
    sampling of the previous row for a minute after it ended."""

    def ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    if not Path("/proc/stat").exists():
        return 0.0
    total0, idle0 = ticks()
    time.sleep(seconds)
    total1, idle1 = ticks()
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def genctl(*args: str) -> None:
    """Run a genctl command in a process of its own (its own torch threads and CPU clock), from the repository."""
    subprocess.run([sys.executable, "-m", "genctl", *args], check=True, cwd=REPO)


def with_earlier(path: Path, rows: list[dict], key: str) -> list[dict]:
    """``rows`` after those of ``path`` (the JSON an earlier run wrote) that they do not replace by ``key``:
    what earlier sessions measured, each naming its CPU, stays beside what this one did."""
    earlier = json.loads(path.read_text()) if path.is_file() else []
    ran = {r[key] for r in rows}
    return [r for r in earlier if r[key] not in ran] + rows


def bench(name: str, data: Path, budget: float | None, out: Path, extra: list[str], reuse: bool) -> dict:
    run = out / name
    args = [f"experiment={name}", f"dataset.root={data}", *extra]
    if budget is not None:
        args.append(f"trainer.max_time={budget:g}")
    if not (reuse and (run / FILENAME).exists()):
        busy = busy_cores()
        if busy > 0.2:
            print(
                f"warning: {busy:.1f} cores busy before {name}: torch's threads spin while they wait for a busy core, "
                "so the row's CPU budget buys fewer steps than on an idle machine",
                file=sys.stderr,
            )
        genctl("train", *args, f"hydra.run.dir={run}", "overwrite=true")
    record = RunRecord.read(run)
    nll = record.best_nll()
    if nll is None:
        raise SystemExit(f"{run / FILENAME} holds no test NLL")
    cfg = OmegaConf.load(RunFolder(run).config)
    paper = PAPER.get(name)
    return {
        "row": name,
        "run": str(run),
        "model": record.model,
        "protocol": record.protocol,
        "binarize": record.binarize,
        "command": "genctl train " + " ".join(args).replace(str(data), "DATA"),
        "budget_cpu_min": cfg.trainer.max_time,
        "clock": cfg.trainer.clock,
        "cpu_min": round((record.cpu_time_s or 0) / 60, 1),
        "wall_min": round((record.wall_time_s or 0) / 60, 1),
        "batch_size": cfg.trainer.batch_size,
        "lr": cfg.optim.lr,
        "schedule": cfg.optim.schedule,
        "params": record.params,
        "epochs": record.epochs,
        "steps": record.steps,
        "nll_nats": nll.nats,
        "bits_per_dim": nll.bits_per_dim,
        "estimator": nll.estimator,
        "subset": tight_subset(run, data),
        "quality": row_quality(run, data),
        "train_images_per_s": record.train_images_per_s,
        "sample_64_s": round(sample_seconds(run), 2),
        "peak_memory_mb": record.peak_memory_mb,
        "paper_nats": paper[0] if paper else None,
        "paper": paper[1] if paper else NO_PAPER.get(name, ""),
        "paper_protocol": paper[2] if paper else "",
    }


def gap(r: dict) -> str:
    """The k=1000 bound on the subset beside the table's k on the same images."""
    s = r["subset"]
    if not s:
        return "-"
    (small, a), (_, b) = [(key, v["nats"]) for key, v in s.items() if key.startswith("k")]
    return f"{b:.2f} vs {a:.2f} ({small[1:]})"


def mnist_table(rows: list[dict]) -> str:
    budget = rows[0]["budget_cpu_min"]
    lines = [
        f"**Table 1: binarized MNIST**, test NLL in nats on the official 10,000 test digits; {budget:g} CPU minutes of "
        f"training per row (process time over 2 threads, about {budget / 2:g} wall minutes on an idle 2-core machine); "
        "best.pt by validation loss. Autoregressive rows: genctl's fixed binarization of 50,000 train / 10,000 val; "
        "VAE rows: dynamic binarization of 59,000 train / 1,000 val; the test digits binarized once.",
        "",
        f"| row | binarization | params | steps | test NLL (nats) | estimator | IWAE k=1000 on the first {SUBSET} (vs table k) "
        "| train img/s | 64 samples (s) | paper (nats) | paper: model, protocol |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = f"{r['paper_nats']:.2f}" if r["paper_nats"] else "-"
        source = f"{r['paper']}, {r['paper_protocol']}" if r["paper_protocol"] else r["paper"]
        lines.append(
            f"| {r['row']} | {r['binarize']} | {r['params']:,} | {r['steps']:,} | {r['nll_nats']:.2f} | {r['estimator']} | "
            f"{gap(r)} | {r['train_images_per_s']:.0f} | {r['sample_64_s']:.1f} | {paper} | {source} |"
        )
    return "\n".join(lines)


def fashion_table(rows: list[dict]) -> str:
    budget = rows[0]["budget_cpu_min"]
    lines = [
        f"**Table 2: Fashion-MNIST, 8-bit**, bits/dim on the official 10,000 test images (discrete likelihoods over 256 "
        f"levels); {budget:g} CPU minutes of training per row; best.pt by validation loss on 1,000 held-out training images. "
        "The paper column stays empty: no published bits/dim of these models on 8-bit Fashion-MNIST's official test set "
        "was found to set beside them, and a cell is left empty rather than guessed.",
        "",
        f"| row | params | steps | bits/dim | nats | estimator | IWAE k=1000 on the first {SUBSET} (nats, vs table k) "
        "| train img/s | 64 samples (s) | paper (bits/dim) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| uniform over 256 levels (sanity line) | 0 | - | 8.0000 | {784 * 8 * math.log(2):.2f} | exact | - | - | - | - |",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['params']:,} | {r['steps']:,} | {r['bits_per_dim']:.4f} | {r['nll_nats']:.1f} | "
            f"{r['estimator']} | {gap(r)} | {r['train_images_per_s']:.0f} | {r['sample_64_s']:.1f} | - |"
        )
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "holds" if ok else "FAILS"


def mnist_checks(rows: list[dict]) -> list[str]:
    """The orderings Table 1 is for, each with its numbers."""
    nll = {r["row"].removeprefix("mnist_"): r["nll_nats"] for r in rows}
    lines = []
    if "fvsbn" in nll:
        off = nll["fvsbn"] - PAPER["mnist_fvsbn"][0]
        lines.append(f"FVSBN within 2 nats of its paper value (97.45): {off:+.2f} -> {verdict(abs(off) <= 2)}")
        others = [n for n in nll if n != "fvsbn" and f"mnist_{n}" not in ABLATIONS]
        if others:
            worst = max(others, key=nll.get)
            ok = nll["fvsbn"] > nll[worst]
            line = f"FVSBN worst of the families: {nll['fvsbn']:.2f} vs next worst {worst} {nll[worst]:.2f}"
            lines.append(f"{line} -> {verdict(ok)}")
    pixel = [n for n in ("pixelcnn", "gated_pixelcnn", "pixelrnn_row", "pixelrnn_diag") if n in nll]
    rivals = [n for n in ("vae", "vae_mlp", "made", "nade") if n in nll]
    if pixel and rivals:
        best, rival = min(pixel, key=nll.get), min(rivals, key=nll.get)
        lines.append(
            f"best PixelCNN-type row below the VAE, MADE and NADE rows: {best} {nll[best]:.2f} vs {rival} {nll[rival]:.2f} "
            f"-> {verdict(nll[best] < nll[rival])}"
        )
    if "made" in nll:
        below = [n for n in ("nade", "fvsbn") if n in nll]
        if below:
            lines.append(
                "MADE below " + " and ".join(f"{n} ({nll[n]:.2f})" for n in below) + f": {nll['made']:.2f} -> "
                f"{verdict(all(nll['made'] < nll[n] for n in below))}"
            )
    if "hvae" in nll and "vae" in nll:
        lines.append(
            f"hvae at least 3 nats below the conv VAE: {nll['hvae']:.2f} vs {nll['vae']:.2f} ({nll['vae'] - nll['hvae']:+.2f}) "
            f"-> {verdict(nll['vae'] - nll['hvae'] >= 3)}"
        )
    if "hvae" in nll and "hvae_1group" in nll:
        lines.append(
            f"one latent group at least 5 nats worse than the hierarchy: {nll['hvae_1group']:.2f} vs {nll['hvae']:.2f} "
            f"({nll['hvae_1group'] - nll['hvae']:+.2f}) -> {verdict(nll['hvae_1group'] - nll['hvae'] >= 5)}"
        )
    return lines


def fashion_checks(rows: list[dict]) -> list[str]:
    bpd = {r["row"].removeprefix("fashion_"): r["bits_per_dim"] for r in rows}
    lines = [f"every row below the uniform 8.0 bits/dim: {verdict(all(v < 8 for v in bpd.values()))}"]
    pixel = [n for n in ("pixelcnn", "gated_pixelcnn", "pixelrnn_row", "pixelrnn_diag") if n in bpd]
    latent = [n for n in ("vae", "hvae") if n in bpd]
    if pixel and latent:
        worst, best = max(pixel, key=bpd.get), min(latent, key=bpd.get)
        lines.append(
            f"every PixelCNN-type row below hvae and the VAE: worst of them {worst} {bpd[worst]:.4f} vs {best} {bpd[best]:.4f} "
            f"-> {verdict(bpd[worst] < bpd[best])}"
        )
    return lines


TABLE_OF = {"mnist": (mnist_table, mnist_checks, "nll_nats"), "fashion": (fashion_table, fashion_checks, "bits_per_dim")}


def quality_table(rows: list[dict], calib: dict, key: str) -> list[str]:
    """Sample quality beside the likelihood: every row, the two calibration lines, and the order
    FID gives the VAEs and the PixelCNN-type rows beside the order NLL gives them."""
    lines = [
        f"Sample quality of {QUALITY_N:,} samples from each row's best.pt against {QUALITY_N:,} test images: "
        "classifier-feature FID, precision and recall (genctl's shipped classifier, not Inception FIDs; "
        "comparable only within this table)",
        "",
        "| row | FID (classifier features) | precision | recall |",
        "|---|---|---|---|",
        *(
            f"| {label} | {q['fid_clf']:.2f} | {q['precision_clf']:.3f} | {q['recall_clf']:.3f} |"
            for label, q in [
                ("held-out real images (floor)", calib["floor"]),
                *((r["row"], r["quality"]) for r in rows),
                ("untrained default VAE (ceiling)", calib["ceiling"]),
            ]
        ),
        "",
    ]
    compared = [r for r in rows if any(n in r["row"] for n in ("vae", "pixelcnn", "pixelrnn")) and r["row"] not in ABLATIONS]
    by_nll = " < ".join(r["row"] for r in sorted(compared, key=lambda r: r[key]))
    by_fid = " < ".join(r["row"] for r in sorted(compared, key=lambda r: r["quality"]["fid_clf"]))
    return [*lines, f"Best first by NLL: {by_nll}", "", f"Best first by FID: {by_fid}", ""]


def section(kind: str, rows: list[dict], calib: dict) -> list[str]:
    """One table, its ordering (best first), its checks and its sample quality."""
    render, check, key = TABLE_OF[kind]
    unit = "nats" if key == "nll_nats" else "bits/dim"
    order = " < ".join(f"{r['row']} {r[key]:.4g}" for r in sorted(rows, key=lambda r: r[key]))
    checks = [f"- {line}" for line in check(rows)]
    return [render(rows), "", f"Ordering ({unit}, best first): {order}", "", *checks, "", *quality_table(rows, calib, key)]


CURVES = ("<!-- written by scripts/bench_curves.py -->", "<!-- end of bench_curves.py's section -->")


def curves_section(images: Path) -> list[str]:
    """RESULTS.md's NLL-against-compute section from bench_curves.py's table and figure (none yet: [])."""
    table = images / "curves.md"
    if not table.is_file():
        return []
    return [
        CURVES[0],
        "## NLL against compute",
        "",
        "`python scripts/bench_curves.py --data DATA --results docs`: one run per row, its recipe for the budget (its",
        "own where the recipe column names one, else the 10-minute recipe with the cosine schedule stretched to the",
        "budget), best.pt kept as it stands at each mark (CPU minutes of training: process time over 2 threads),",
        "each kept checkpoint scored on the official 10,000 test digits by the row's estimator",
        f"(exact; latent rows IWAE k=50, and k={TIGHT_K} on the first {SUBSET} test digits for the final checkpoint). Each row",
        "names its CPU and the target at 60 CPU minutes for that kind of CPU; docs/BENCHMARKS.md gives the account",
        "of every miss.",
        "",
        table.read_text().rstrip(),
        "",
        "![NLL against CPU minutes, every row](results/curves.png)",
        "",
        CURVES[1],
        "",
    ]


def refresh_curves(folder: Path) -> None:
    """Rewrite only FOLDER/RESULTS.md's NLL-against-compute section (before '## Each row' when new)."""
    page = folder / "RESULTS.md"
    text = page.read_text()
    section = "\n".join(curves_section(folder / "results"))
    if CURVES[0] in text:
        head, rest = text.split(CURVES[0], 1)
        text = head + section + "\n" + rest.split(CURVES[1], 1)[1].lstrip("\n")
    else:
        text = text.replace("## Each row", section + "\n## Each row", 1)
    page.write_text(text)


def results_page(tables: dict[str, list[dict]], calibs: dict[str, dict], folder: Path) -> Path:
    """FOLDER/RESULTS.md: both tables, their orderings and checks, each row's command and samples,
    then the page's history (FOLDER/results/history.md)."""
    images = folder / "results"
    images.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results",
        "",
        "Written by `python scripts/bench_models.py --data DATA --results docs` (its docstring gives the protocol; `DATA`",
        "holds MNIST/ and FashionMNIST/ in torchvision's layout); regenerate this page from finished runs with `--reuse`.",
        "One run per row on a 2-core CPU (torch 2.13.0+cpu).",
        "",
    ]
    for r in (r for rows in tables.values() for r in rows):
        (images / f"{r['row']}.png").write_bytes((Path(r["run"]) / "samples_best.png").read_bytes())
    for kind, rows in tables.items():
        lines += section(kind, rows, calibs[kind])
        shown = [r for r in rows if r["row"].split("_", 1)[1] in SIDE_BY_SIDE]
        if shown:
            lines += [
                "Samples side by side (64 from each row's best.pt):",
                "",
                "| " + " | ".join(r["row"] for r in shown) + " |",
                "|" + "---|" * len(shown),
                "| " + " | ".join(f"![{r['row']}](results/{r['row']}.png)" for r in shown) + " |",
                "",
            ]
    lines += curves_section(images)
    lines += ["## Each row", ""]
    for r in (r for rows in tables.values() for r in rows):
        lines += [
            f"### {r['row']}",
            "",
            f"`{r['command']}`: batch {r['batch_size']}, lr {r['lr']:g} ({r['schedule']}), {r['steps']:,} steps in "
            f"{r['cpu_min']:g} CPU minutes ({r['wall_min']:g} wall minutes). Data: {r['protocol']}.",
            "",
            f"![64 samples from {r['row']}](results/{r['row']}.png)",
            "",
        ]
    history = images / "history.md"
    if history.is_file():
        lines += [history.read_text().rstrip(), ""]
    page = folder / "RESULTS.md"
    page.write_text("\n".join(lines))
    return page


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GENCTL_DATA"), help="folder of MNIST/ and FashionMNIST/ ($GENCTL_DATA)")
    p.add_argument("--rows", default=",".join(r for rows in TABLES.values() for r in rows), help="experiments to run, in order")
    p.add_argument("--budget", type=float, help="CPU minutes per row (default: bench.yaml's trainer.max_time)")
    p.add_argument("--out", default=str(REPO / "bench_out" / "models"))
    p.add_argument("--reuse", action="store_true", help=f"keep runs that already finished (their {FILENAME})")
    p.add_argument("--results", help="also write RESULTS.md and the sample grids into this folder (e.g. docs)")
    p.add_argument("extra", nargs="*", help="overrides added to every run, e.g. eval.k=100")
    a = p.parse_args()
    if not a.data:
        p.error("--data DIR (or $GENCTL_DATA): the folder holding MNIST/ and FashionMNIST/")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.rows.split(","):
        rows.append(bench(name, Path(a.data).resolve(), a.budget, out, a.extra, a.reuse))
        print(json.dumps(rows[-1]), flush=True)
        (out / "bench_models.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    tables = {kind: [r for r in rows if r["row"] in names] for kind, names in TABLES.items()}
    tables = {kind: found for kind, found in tables.items() if found}
    calibs = {kind: calibration_lines(kind, found, Path(a.data).resolve(), out) for kind, found in tables.items()}
    text = "\n".join(line for kind, found in tables.items() for line in section(kind, found, calibs[kind]))
    print("\n" + text)
    (out / "bench_models.md").write_text(text + "\n")
    print(f"written to {out / 'bench_models.json'} and {out / 'bench_models.md'}")
    if a.results:
        print(f"results page: {results_page(tables, calibs, Path(a.results))}")


if __name__ == "__main__":
    main()
