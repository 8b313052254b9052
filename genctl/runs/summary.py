"""Finished runs as tables: the summary of a sweep's jobs (summary.csv, summary.md, TensorBoard's
HParams tab) and ``genctl compare``'s rows, each read from the run folders' records
(:class:`genctl.runs.record.RunRecord`) and the overrides that made them."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from genctl.errors import GenctlError
from genctl.runs.atomic import atomic_write, refuse_links, write_text
from genctl.runs.folder import HPARAMS, RECORD, SUMMARY_CSV, SUMMARY_MD, RunFolder
from genctl.runs.record import TEST, RunRecord
from genctl.runs.untrusted import load_yaml

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


HParam = bool | int | float | str  # the values TensorBoard's HParams tab shows
# A column's type: its HParams data type, and the field of protobuf's Value that holds a value of it
COLUMNS = {
    bool: ("DATA_TYPE_BOOL", "bool_value"),
    float: ("DATA_TYPE_FLOAT64", "number_value"),
    str: ("DATA_TYPE_STRING", "string_value"),
}


def job_overrides(run: Path) -> list[str]:
    """The command-line overrides that made the job in ``run`` (Hydra's ``.hydra/overrides.yaml``)."""
    overrides_file = RunFolder(run).overrides
    return load_yaml(overrides_file) if overrides_file.is_file() else []


def run_row(run: Path) -> dict[str, Any]:
    """One flat row from a run folder's record and the overrides that made it."""
    record = RunRecord.read(run)
    row: dict[str, Any] = {"run": run.name, "overrides": job_overrides(run)}
    for key in ("model", "dataset", "params", "epochs", "wall_time_s", "best_val_loss"):
        row[key] = getattr(record, key)
    test = record.evaluation(TEST)
    if test is not None:
        row.update({f"test_{name}": value for name, value in test.scalars().items()})
    if record.error is not None:
        row["error"] = record.error
    return row


def sorted_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep that hold a record, in job order (0, 1, ..., 10)."""
    return sorted((p.parent for p in sweep_dir.glob(f"*/{RECORD}")), key=lambda p: (len(p.name), p.name))


def write_sweep_summary(sweep_dir: Path) -> tuple[str, list[str], int] | None:
    """summary.csv and summary.md of a finished sweep: a row per job with the overrides the sweep
    varied, its numbers and, last, the one-line error of a failed job. (The table, the failed jobs,
    the number of jobs); None where no job left a record."""
    runs = sorted_jobs(sweep_dir)
    if not runs:
        return None
    rows = [run_row(r) for r in runs]
    varied = {o for row in rows for o in row["overrides"]} - set.intersection(*(set(r["overrides"]) for r in rows))
    failed = [row["run"] for row in rows if "error" in row]
    for row in rows:  # show what the sweep varied, not the overrides every run shares
        row["overrides"] = " ".join(o for o in row["overrides"] if o in varied)
        if failed:
            row["error"] = row.pop("error", None)  # the last column, whichever row comes first
    table = markdown_table(rows)
    write_text(sweep_dir / SUMMARY_CSV, csv_text(rows), "the sweep summary")
    write_text(sweep_dir / SUMMARY_MD, table + "\n", "the sweep summary")
    return table, failed, len(rows)


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV, one column per key any row has (the sweep's summary.csv, genctl compare's compare.csv)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def hparam_values(overrides: list[str]) -> dict[str, HParam]:
    """``["model.latent_dim=4", "optim=rmsprop"]`` -> ``{"model.latent_dim": 4, "optim": "rmsprop"}``:
    numbers and booleans as Hydra parsed them, anything else as written."""
    values: dict[str, HParam] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_delete():
            value = o.value()
            values[o.key_or_group] = value if isinstance(value, (bool, int, float, str)) else o.get_value_element_as_str()
    return values


def job_metrics(record: RunRecord) -> dict[str, float]:
    """What the HParams tab compares: the best validation loss and the test numbers, the
    likelihoods in nats and bits/dim (``test/nll_iwae``, ``test/nll_iwae_bits_per_dim``)."""
    metrics = {} if record.best_val_loss is None else {"best_val_loss": record.best_val_loss}
    test = record.evaluation(TEST)
    for name, value in (test.metrics if test else {}).items():
        if isinstance(value, dict):
            metrics[f"test/{name}"] = value["nats"]
            if value.get("bits_per_dim") is not None:
                metrics[f"test/{name}_bits_per_dim"] = value["bits_per_dim"]
        elif isinstance(value, (int, float)):
            metrics[f"test/{name}"] = value
    return metrics


def column_type(values: list[HParam]) -> type:
    """One type per HParams column: booleans, numbers, else text."""
    if all(type(v) is bool for v in values):
        return bool
    return float if all(type(v) in (int, float) for v in values) else str


def hparams_summary(**data: Any) -> Any:
    """``hparams_summary(experiment=...)``: the HParams plugin's data under its tag (``_hparams_/experiment``),
    built from its protos (``tensorboard.plugins.hparams.summary`` builds the same, but imports TensorFlow)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    (name,) = data
    plugin = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=f"_hparams_/{name}", metadata=plugin)])


def write_hparams(sweep_dir: Path, runs: list[Path]) -> Path:
    """One HParams session per job in ``<sweep>/hparams/<job>``: the hyperparameters the sweep
    varied (every override where it varied none) and the job's metrics; a failed job is a session
    whose status is failure, without metrics. The experiment (columns and their values) is in
    ``<sweep>/hparams`` itself. Event files of an earlier summary there are replaced."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    folder = sweep_dir / HPARAMS
    refuse_links(folder, sweep_dir)
    for job in folder.iterdir() if folder.is_dir() else []:  # job folders: a planted link would lead the writer elsewhere
        refuse_links(job, sweep_dir)
    for old in [*folder.glob("events.out.tfevents.*"), *folder.glob("*/events.out.tfevents.*")]:
        old.unlink()
    jobs = {run.name: (hparam_values(job_overrides(run)), RunRecord.read(run)) for run in runs}
    columns: dict[str, list[HParam]] = {}
    for values, _ in jobs.values():
        for key, value in values.items():
            columns.setdefault(key, []).append(value)
    varied = {key for key, values in columns.items() if len(values) < len(jobs) or len(set(map(repr, values))) > 1}
    kinds = {key: column_type(values) for key, values in columns.items() if key in varied or not varied}
    infos = [
        api_pb2.HParamInfo(
            name=key, type=getattr(api_pb2, COLUMNS[kind][0]), domain_discrete=sorted({kind(v) for v in columns[key]})
        )
        for key, kind in kinds.items()
    ]
    metrics = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag))
        for tag in dict.fromkeys(tag for _, record in jobs.values() for tag in job_metrics(record))
    ]
    with SummaryWriter(str(folder)) as writer:
        experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
        writer.file_writer.add_summary(hparams_summary(experiment=experiment))
    for job, (values, record) in jobs.items():
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in values.items():
            if key in kinds:
                setattr(start.hparams[key], COLUMNS[kinds[key]][1], kinds[key](value))
        status = api_pb2.STATUS_FAILURE if record.error is not None else api_pb2.STATUS_SUCCESS
        with SummaryWriter(str(folder / job)) as writer:
            writer.file_writer.add_summary(hparams_summary(session_start_info=start))
            for tag, value in job_metrics(record).items():
                writer.add_scalar(tag, value, record.steps or 0)
            end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
            writer.file_writer.add_summary(hparams_summary(session_end_info=end))
    return folder


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise GenctlError(f"{path} does not exist; pass run folders or sweep folders (runs/multirun/<stamp>)")
        found = sorted(p.parent for p in path.rglob(RECORD))
        if not found:
            raise GenctlError(f"no finished run under {path} (no {RECORD}): train to the end or run genctl eval first")
        runs += [r for r in found if r not in runs]
    return runs


def history(run: Path) -> list[dict[str, Any]]:
    """Validation records by step; a resumed run's repeated steps keep their latest record."""
    file = RunFolder(run).history
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


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """genctl compare's Markdown table, with what its latent and sample-quality columns mean where it has them."""
    table = markdown_table(rows)
    if any("au" in row or "probe_acc" in row for row in rows):
        table += "\n\n" + LATENT_NOTE
    if any("fid_clf" in row for row in rows):
        table += "\n\n" + QUALITY_NOTE
    return table


def labels_for(runs: list[Path]) -> list[str]:
    """Shortest distinct names: the path below the runs' common parent."""
    if len(runs) == 1:
        return [runs[0].name]
    parts = [r.resolve().parts for r in runs]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[common:]) for p in parts]


def comparison_figure(runs: list[Path], labels: list[str], out: Path) -> Path:
    """compare.png in ``out``: validation loss against wall time of each run, above a row of their sample grids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    grids = [(label, RunFolder(run).grid("samples")) for run, label in zip(runs, labels)]
    grids = [(label, png) for label, png in grids if png.is_file()]
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
