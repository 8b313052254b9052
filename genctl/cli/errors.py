"""Turning user errors into one line and a non-zero exit, wherever they surface.

Two places: Hydra's config composition (unknown group choice, unknown key, bad override syntax),
reached by replacing Hydra's ``run_and_report``; and genctl's own ``GenctlError`` raised inside a
subcommand, caught by :func:`exit_on_user_error` before Hydra adds its own lines. Anything else
is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the full trace for everything.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from genctl.errors import GenctlError

PLUGINS = ("optuna", "submitit_slurm", "submitit_local")  # Hydra plugins behind genctl[sweep]


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _format(ex: BaseException) -> str | None:
    """One actionable line for errors in the user's input; None for anything else (a bug)."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(ex, GenctlError):
        return str(ex)
    if isinstance(ex, MissingMandatoryValue):
        key = getattr(ex, "full_key", None) or "a value"
        return f"{key} is required: add {key}=VALUE to the command line"
    text = str(ex)
    if isinstance(ex, MissingConfigException):
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        if found:
            group, choice = found.groups()
            if group.startswith("hydra/") and choice in PLUGINS:
                return f"{group}={choice} comes from an optional plugin that is not installed: pip install 'genctl[sweep]'"
            options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
            return f"unknown {group} '{choice}'; choose one of: {', '.join(options)}"
    if isinstance(ex, (HydraException, OmegaConfBaseException)):
        cause = ex.__cause__
        parts = [p.strip() for p in text.split("Config search path")[0].splitlines() if p.strip()]
        if isinstance(cause, OmegaConfBaseException):
            parts.append(str(cause).splitlines()[0])
            node = getattr(cause, "parent_node", None)
            if node is not None and hasattr(node, "keys") and "not in struct" in str(cause):
                parts.append(f"valid keys here: {', '.join(map(str, node.keys()))}")
        return "; ".join(parts)
    return None


def report_errors(subcommand: str, original: Callable[[Callable[[], Any]], Any]) -> Callable[[Callable[[], Any]], Any]:
    """Replacement for Hydra's ``run_and_report``: user errors become one line and exit code 2."""

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as ex:  # noqa: BLE001 - sorted into user errors and bugs below
            if _full_error():
                raise
            message = _format(ex)
            if message is None:

                def reraise() -> None:
                    raise ex  # noqa: F821 - bound while the except block runs reraise

                return original(reraise)  # a bug: Hydra prints the (trimmed) traceback
            print(f"genctl {subcommand}: error: {message}", file=sys.stderr)
            sys.exit(getattr(ex, "exit_code", 2))

    return run_and_report


def exit_on_user_error(subcommand: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task function: a ``GenctlError`` prints one line and exits (code 2)."""

    def wrap(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def run(*args: Any, **kwargs: Any) -> Any:
            from omegaconf.errors import OmegaConfBaseException

            try:
                return task(*args, **kwargs)
            except (GenctlError, OmegaConfBaseException) as e:
                if _full_error():
                    raise
                print(f"genctl {subcommand}: error: {_format(e)}", file=sys.stderr)
                sys.exit(getattr(e, "exit_code", 2))

        return run

    return wrap
