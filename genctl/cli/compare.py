"""``genctl compare RUN_OR_SWEEP [...]``: finished runs side by side.

Every folder under the arguments that holds a ``metrics.json`` is a run (so a multirun sweep
folder works as is). Prints one Markdown table (model, dataset, parameters, epochs, wall time,
test NLL in nats, bits/dim, the estimator, samples/s; and where any run has them, its active
latent units, the linear probe's accuracy genctl eval eval.metrics=[probe] filed and the sample
quality eval.metrics=[fid] filed), writes it as ``compare.md`` and
``compare.csv``, and draws ``compare.png``: validation loss against wall time for each run
(from its ``history.jsonl``) above a row of the runs' sample grids.

Not a Hydra app: it reads run folders and composes no config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from genctl.cli.sweep import csv_text, markdown_table
from genctl.errors import GenctlError
from genctl.runs.atomic import atomic_write, check_writable, write_text
from genctl.runs.record import FILENAME, RunRecord

# genctl eval eval.metrics=[fid] files these as sample_quality_test@<checkpoint> (genctl.eval.quality.quality_name)
QUALITY = "sample_quality_test"
QUALITY_COLUMNS = {"fid_clf": "fid_clf", "precision_clf": "precision_clf", "recall_clf": "recall_clf", "n_fake": "fid_samples"}
# genctl eval eval.metrics=[probe] files this as probe_test@<checkpoint>
PROBE = "probe_test"
LATENT_NOTE = (
    "au: active latent units (variance over test images of the posterior mean above 0.01, Burda et al. 2016) "
    "of latent_units; probe_acc: test accuracy of a linear classifier fit to the train split's codes."
)
QUALITY_NOTE = (
    "fid_clf, precision_clf, recall_clf: FID and precision/recall (k=3) of fid_samples samples against the test split "
    "in the feature space of genctl's own classifier for the dataset, not Inception FIDs; compare them at equal fid_samples."
)


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise GenctlError(f"{path} does not exist; pass run folders or sweep folders (runs/multirun/<stamp>)")
        found = sorted(p.parent for p in path.rglob(FILENAME))
        if not found:
            raise GenctlError(f"no finished run under {path} (no metrics.json): train to the end or run genctl eval first")
        runs += [r for r in found if r not in runs]
    return runs


def history(run: Path) -> list[dict[str, Any]]:
    """Validation records by step; a resumed run's repeated steps keep their latest record."""
    file = run / "history.jsonl"
    if not file.is_file():
        return []
    by_step = {r["step"]: r for r in map(json.loads, file.read_text().splitlines()) if r.get("val_loss") is not None}
    return [by_step[s] for s in sorted(by_step)]


def compare_row(run: Path, label: str) -> dict[str, Any]:
    record = RunRecord.read(run)
    nll = record.best_nll()
    quality = record.evaluation(QUALITY)
    row = {
        "run": label,
        "model": record.model,
        "dataset": record.dataset,
        "params": record.params,
        "epochs": record.epochs,
        "wall_time_s": record.wall_time_s,
        "test_nll_nats": nll.nats if nll else None,
        "bits_per_dim": nll.bits_per_dim if nll else None,
        "estimator": nll.estimator if nll else "-",
        "samples_per_s": record.samples_per_s,
    }
    test = record.evaluation()
    if test is not None and "active_units" in test.metrics:
        row.update(au=test.metrics["active_units"], latent_units=test.metrics.get("latent_units"))
    probe = record.evaluation(PROBE)
    if probe is not None:
        row["probe_acc"] = probe.metrics.get("probe_accuracy")
    if quality is not None:
        row.update({column: quality.metrics.get(key) for key, column in QUALITY_COLUMNS.items()})
    return row


def labels_for(runs: list[Path]) -> list[str]:
    """Shortest distinct names: the path below the runs' common parent."""
    if len(runs) == 1:
        return [runs[0].name]
    parts = [r.resolve().parts for r in runs]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[common:]) for p in parts]


def figure(runs: list[Path], labels: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    grids = [(label, run / "samples.png") for run, label in zip(runs, labels) if (run / "samples.png").is_file()]
    fig = plt.figure(figsize=(max(8, 2.2 * len(grids)), 7.5 if grids else 4.5))
    rows = fig.add_gridspec(2 if grids else 1, max(len(grids), 1), height_ratios=[1.4, 1] if grids else [1])
    curve = fig.add_subplot(rows[0, :])
    for run, label in zip(runs, labels):
        points = history(run)
        if points:
            curve.plot([p["elapsed_s"] / 60 for p in points], [p["val_loss"] for p in points], marker=".", label=label)
    curve.set_xlabel("wall time (minutes)")
    curve.set_ylabel("validation loss (nats per image)")
    curve.grid(alpha=0.3)
    if curve.lines:
        curve.legend(fontsize="small")
    for i, (label, png) in enumerate(grids):
        ax = fig.add_subplot(rows[1, i])
        ax.imshow(Image.open(png), cmap="gray")
        ax.set_title(label, fontsize="small")
        ax.axis("off")
    fig.tight_layout()
    path = out / "compare.png"
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), "the comparison figure", out)
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genctl compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="run folders and/or sweep folders")
    p.add_argument("--out", help="where compare.md/.csv/.png go (default: the one folder given, else ./compare)")
    p.add_argument("--no-figure", action="store_true", help="skip compare.png")
    a = p.parse_args(argv)
    try:
        runs = find_runs(a.folders)
        labels = labels_for(runs)
        rows = [compare_row(run, label) for run, label in zip(runs, labels)]
        out = Path(a.out) if a.out else Path(a.folders[0]) if len(a.folders) == 1 else Path("compare")
        written = [out / "compare.md", out / "compare.csv"]
        for path in [*written, *([] if a.no_figure else [out / "compare.png"])]:
            check_writable(path, "the comparison", "pass --out DIR in a writable folder", out)
        table = markdown_table(rows)
        if any("au" in row or "probe_acc" in row for row in rows):
            table += "\n\n" + LATENT_NOTE
        if any("fid_clf" in row for row in rows):
            table += "\n\n" + QUALITY_NOTE
        print(table)
        write_text(written[0], table + "\n", "the comparison", out)
        write_text(written[1], csv_text(rows), "the comparison", out)
        if not a.no_figure:
            written.append(figure(runs, [f"{r['run']}: {r['model']}" for r in rows], out))  # sweep folders are numbered
    except GenctlError as e:
        print(f"genctl compare: error: {e}", file=sys.stderr)
        return 2
    print("written: " + ", ".join(map(str, written)))
    return 0
