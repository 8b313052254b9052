"""Turning errors in the user's input into one line and exit code 2, from their types and attributes.

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

from genctl.errors import GenctlError

PLUGINS = ("optuna", "submitit_slurm", "submitit_local")  # Hydra plugins behind genctl[sweep]


def full_error() -> bool:
    """Whether the user asked for full traces instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _missing_choice(group: str, choice: str, options: list[str]) -> str:
    if group.startswith("hydra/") and choice in PLUGINS:
        return f"{group}={choice} comes from an optional plugin that is not installed: pip install 'genctl[sweep]'"
    return f"unknown {group} '{choice}'; choose one of: {', '.join(options)}"


def _omegaconf(ex: Exception) -> str:
    """An OmegaConf error from its typed fields: the key it names and, for an unknown key, its siblings."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

    key = getattr(ex, "full_key", None)
    first = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
    if isinstance(ex, MissingMandatoryValue):
        key = key or "a value"
        return f"{key} is required: add {key}=VALUE to the command line"
    parent = getattr(ex, "parent_node", None)
    if isinstance(ex, (ConfigAttributeError, ConfigKeyError)) and isinstance(parent, DictConfig) and key:
        siblings = [str(k) for k in parent.keys() if k != "hydra"]
        if getattr(ex, "key", None) not in siblings:
            return f"unknown key '{key}'; valid keys here: {', '.join(siblings)} (add a new key with +{key}=VALUE)"
    if isinstance(ex, ValidationError) and key:
        return f"{key}={getattr(ex, 'value', '')} is not valid: {first}"
    return f"{key}: {first}" if key else first


def _prose(text: str) -> str:
    """A message Hydra wraps over several lines (its instantiation policy's, with a ``full_key:``
    line at the end where it has one) as one sentence after the key it names."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keys = [line.removeprefix("full_key:").strip() for line in lines if line.startswith("full_key:")]
    sentence = " ".join(line for line in lines if not line.startswith("full_key:"))
    return f"{keys[0]}: {sentence}" if keys and keys[0] else sentence


def describe(ex: BaseException) -> str | None:
    """One actionable line for an error in the user's input; None for anything else (a bug)."""
    from hydra.errors import (
        ConfigCompositionException,
        HydraException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(ex, GenctlError):
        return str(ex)
    if isinstance(ex, InstantiationException):
        return _prose(str(ex))
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file and ex.options is not None:
        group, _, choice = ex.missing_cfg_file.rpartition("/")
        return _missing_choice(group, choice, list(ex.options))
    if isinstance(ex, OverrideParseException):
        return f"cannot parse '{ex.override}': {_one_line(ex.message)}"
    if isinstance(ex, ConfigCompositionException) and isinstance(ex.__cause__, OmegaConfBaseException):
        return _omegaconf(ex.__cause__)
    if isinstance(ex, OmegaConfBaseException):
        return _omegaconf(ex)
    if isinstance(ex, HydraException):
        return _one_line(str(ex))
    return None


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
                print(f"genctl {subcommand}: error: {describe(e)}", file=sys.stderr)
                sys.exit(getattr(e, "exit_code", 2))
            except KeyboardInterrupt as e:  # not an Exception: a sweep stops at it
                if full_error():
                    raise
                print(f"genctl {subcommand}: error: {e or 'interrupted'}", file=sys.stderr)
                sys.exit(130)

        return run

    return wrap
