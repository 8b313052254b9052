"""A Hydra callback that writes a table of every run's final metrics into the sweep folder, and
the same runs for TensorBoard's HParams tab (``tensorboard --logdir <sweep folder>``).

A job that failed is a row too, with its one-line error in the last column, and the sweep then
ends with exit code 1 (all its jobs ran). Hydra turns an exception raised in a callback into a
warning, so the exit code is set with ``SystemExit``, once the summary is written; callbacks end
in reverse order, so the ones added after this one (``+hydra.callbacks...``) have ended by then.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genctl.errors import GenctlError
from genctl.runs.atomic import refuse_links, write_text
from genctl.runs.record import FILENAME, TEST, RunRecord
from genctl.runs.untrusted import load_yaml

log = logging.getLogger("genctl")

HParam = bool | int | float | str  # the values TensorBoard's HParams tab shows
# A column's type: its HParams data type, and the field of protobuf's Value that holds a value of it
COLUMNS = {
    bool: ("DATA_TYPE_BOOL", "bool_value"),
    float: ("DATA_TYPE_FLOAT64", "number_value"),
    str: ("DATA_TYPE_STRING", "string_value"),
}


def job_overrides(run: Path) -> list[str]:
    """The command-line overrides that made the job in ``run`` (Hydra's ``.hydra/overrides.yaml``)."""
    overrides_file = run / ".hydra" / "overrides.yaml"
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

    folder = sweep_dir / "hparams"
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


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = sorted((p.parent for p in sweep_dir.glob(f"*/{FILENAME}")), key=lambda p: (len(p.name), p.name))
        if not runs:
            return
        rows = [run_row(r) for r in runs]
        varied = {o for row in rows for o in row["overrides"]} - set.intersection(*(set(r["overrides"]) for r in rows))
        failed = [row["run"] for row in rows if "error" in row]
        for row in rows:  # show what the sweep varied, not the overrides every run shares
            row["overrides"] = " ".join(o for o in row["overrides"] if o in varied)
            if failed:
                row["error"] = row.pop("error", None)  # the last column, whichever row comes first
        table = markdown_table(rows)
        try:
            write_text(sweep_dir / "summary.csv", csv_text(rows), "the sweep summary")
            write_text(sweep_dir / "summary.md", table + "\n", "the sweep summary")
        except GenctlError as e:  # Hydra would make an exception here a warning, and the sweep a success
            print(f"genctl train: error: {e}", file=sys.stderr)
            sys.exit(2)
        log.info("sweep summary (%s):\n%s", sweep_dir / "summary.csv", table)
        try:  # the table is written, and a failed job still sets the exit code, whatever happens here
            hparams = write_hparams(sweep_dir, runs)
            log.info("the sweep in TensorBoard's HParams tab (%s): tensorboard --logdir %s", hparams, sweep_dir)
        except (GenctlError, OSError, ValueError) as e:
            log.warning("the sweep's HParams summary was not written: %s", e)
        if failed:
            print(
                f"genctl train: error: {len(failed)} of {len(rows)} jobs failed (job {', '.join(failed)}); "
                f"their errors are in {sweep_dir / 'summary.md'}",
                file=sys.stderr,
            )
            sys.exit(1)
