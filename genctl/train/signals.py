"""Stopping by signal: SIGINT/SIGTERM end training after the step in flight, with a resumable
checkpoint, instead of killing the process mid-write."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from genctl.errors import GenctlError


class Interrupted(GenctlError):
    """Training stopped by a signal after writing a resumable checkpoint."""

    exit_code = 130


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """SIGINT/SIGTERM set a flag (read after each step) instead of killing the process mid-write."""
    received: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
