"""Errors in the user's input as one line and exit code 2 (phrased by :func:`genctl.config.error_line`).

Two places raise them: composing the config (unknown group choice, unknown key, bad override syntax
or type), which :mod:`genctl.cli.overrides` does with Hydra's compose API before a subcommand starts;
and a subcommand itself (``GenctlError``, or an OmegaConf error such as a missing ``???`` value),
caught by :func:`exit_on_user_error` before Hydra adds its own lines. Anything else is a bug and
keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the full trace for everything.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from genctl.config import error_line
from genctl.errors import GenctlError


def full_error() -> bool:
    """Whether the user asked for full traces instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(subcommand: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task function: a ``GenctlError`` prints one line and exits (code 2); so does
    Ctrl-C (code 130), with what the task says it left (the ``KeyboardInterrupt``'s message)."""

    def wrap(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def run(*args: Any, **kwargs: Any) -> Any:
            from omegaconf.errors import OmegaConfBaseException

            try:
                return task(*args, **kwargs)
            except (GenctlError, OmegaConfBaseException) as e:
                if full_error():
                    raise
                print(f"genctl {subcommand}: error: {error_line(e)}", file=sys.stderr)
                sys.exit(getattr(e, "exit_code", 2))
            except KeyboardInterrupt as e:  # not an Exception: a sweep stops at it
                if full_error():
                    raise
                print(f"genctl {subcommand}: error: {e or 'interrupted'}", file=sys.stderr)
                sys.exit(130)

        return run

    return wrap
