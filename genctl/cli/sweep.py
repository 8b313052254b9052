"""A Hydra callback that writes a table of every run's final metrics into the sweep folder.

A job that failed is a row too, with its one-line error in the last column, and the sweep then
ends with exit code 1 (all its jobs ran). Hydra turns an exception raised in a callback into a
warning, so the exit code is set with ``SystemExit``, once the summary is written; callbacks end
in reverse order, so the ones added after this one (``+hydra.callbacks...``) have ended by then.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genctl.runs.record import FILENAME, TEST, RunRecord

log = logging.getLogger("genctl")


def run_row(run: Path) -> dict[str, Any]:
    """One flat row from a run folder's record and the overrides that made it."""
    record = RunRecord.read(run)
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    row: dict[str, Any] = {"run": run.name, "overrides": overrides}
    for key in ("model", "dataset", "params", "epochs", "wall_time_s", "best_val_loss"):
        row[key] = getattr(record, key)
    test = record.evaluation(TEST)
    if test is not None:
        row.update({f"test_{name}": value for name, value in test.scalars().items()})
    if record.error is not None:
        row["error"] = record.error
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


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
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with open(sweep_dir / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        table = markdown_table(rows)
        (sweep_dir / "summary.md").write_text(table + "\n")
        log.info("sweep summary (%s):\n%s", sweep_dir / "summary.csv", table)
        if failed:
            print(
                f"genctl train: error: {len(failed)} of {len(rows)} jobs failed (job {', '.join(failed)}); "
                f"their errors are in {sweep_dir / 'summary.md'}",
                file=sys.stderr,
            )
            sys.exit(1)
