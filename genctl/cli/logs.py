"""Console logging that does not tear tqdm progress bars."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm


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
