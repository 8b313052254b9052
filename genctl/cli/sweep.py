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
from genctl.runs.folder import SUMMARY_CSV, SUMMARY_MD
from genctl.runs.summary import sorted_jobs, write_hparams, write_sweep_summary

log = logging.getLogger("genctl")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = write_sweep_summary(sweep_dir)
        except GenctlError as e:  # Hydra would make an exception here a warning, and the sweep a success
            print(f"genctl train: error: {e}", file=sys.stderr)
            sys.exit(2)
        if summary is None:
            return
        table, failed, jobs = summary
        log.info("sweep summary (%s):\n%s", sweep_dir / SUMMARY_CSV, table)
        try:  # the table is written, and a failed job still sets the exit code, whatever happens here
            hparams = write_hparams(sweep_dir, sorted_jobs(sweep_dir))
            log.info("the sweep in TensorBoard's HParams tab (%s): tensorboard --logdir %s", hparams, sweep_dir)
        except (GenctlError, OSError, ValueError) as e:
            log.warning("the sweep's HParams summary was not written: %s", e)
        if failed:
            print(
                f"genctl train: error: {len(failed)} of {jobs} jobs failed (job {', '.join(failed)}); "
                f"their errors are in {sweep_dir / SUMMARY_MD}",
                file=sys.stderr,
            )
            sys.exit(1)
