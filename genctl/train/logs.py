"""Logging of ``genctl train``: console lines that do not tear tqdm progress bars, and the run
folder's ``train.log``, opened without following a link planted there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from genctl.runs.atomic import open_append


class TqdmHandler(logging.StreamHandler):
    """Write records with ``tqdm.write`` so an active bar is redrawn below the message."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def route_console_through_tqdm() -> None:
    """Swap the console handlers Hydra configured for tqdm-aware ones; file handlers stay."""
    root = logging.getLogger()
    for i, handler in enumerate(root.handlers):
        if type(handler) is logging.StreamHandler:
            replacement = TqdmHandler(handler.stream)
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.handlers[i] = replacement


class RunLogHandler(logging.FileHandler):
    """``logging.FileHandler`` for the run folder's log (``configs/hydra/job_logging/genctl.yaml``):
    the file is opened with ``O_NOFOLLOW`` (:func:`genctl.runs.atomic.open_append`), so a link
    planted at ``train.log`` is refused instead of appended to (the dispatcher refuses such a run
    folder in one line before Hydra configures this handler)."""

    def _open(self) -> IO[str]:
        fd = open_append(Path(self.baseFilename), "the log")
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # the handler closes it
