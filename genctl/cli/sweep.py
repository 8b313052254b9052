"""A Hydra callback that writes a table of every run's final metrics into the sweep folder, and
the same runs for TensorBoard's HParams tab (``tensorboard --logdir <sweep folder>``).

A job that failed is a row too, with its one-line error in the last column, and the sweep then
ends with exit code 1 (all its jobs ran). Hydra turns an exception raised in a callback into a
warning, so the exit code is set with ``SystemExit``, once the summary is written; callbacks end
in reverse order, so the ones added after this one (``+hydra.callbacks...``) have ended by then.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genctl.errors import GenctlError
from genctl.runs.atomic import write_text
from genctl.runs.folder import RECORD, SUMMARY_CSV, SUMMARY_MD
from genctl.runs.summary import csv_text, markdown_table, run_row, write_hparams

log = logging.getLogger("genctl")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = sorted((p.parent for p in sweep_dir.glob(f"*/{RECORD}")), key=lambda p: (len(p.name), p.name))
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
            write_text(sweep_dir / SUMMARY_CSV, csv_text(rows), "the sweep summary")
            write_text(sweep_dir / SUMMARY_MD, table + "\n", "the sweep summary")
        except GenctlError as e:  # Hydra would make an exception here a warning, and the sweep a success
            print(f"genctl train: error: {e}", file=sys.stderr)
            sys.exit(2)
        log.info("sweep summary (%s):\n%s", sweep_dir / SUMMARY_CSV, table)
        try:  # the table is written, and a failed job still sets the exit code, whatever happens here
            hparams = write_hparams(sweep_dir, runs)
            log.info("the sweep in TensorBoard's HParams tab (%s): tensorboard --logdir %s", hparams, sweep_dir)
        except (GenctlError, OSError, ValueError) as e:
            log.warning("the sweep's HParams summary was not written: %s", e)
        if failed:
            print(
                f"genctl train: error: {len(failed)} of {len(rows)} jobs failed (job {', '.join(failed)}); "
                f"their errors are in {sweep_dir / SUMMARY_MD}",
                file=sys.stderr,
            )
            sys.exit(1)
