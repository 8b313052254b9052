"""Where the YAML lives, building registered classes from config nodes with clear errors, and
Hydra's and OmegaConf's errors about what the user typed phrased as one line (:func:`error_line`)."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from genctl.errors import GenctlError

T = TypeVar("T")

# The config groups genctl ships for training (configs/<group>/), and the sections of the composed
# config they fill: experiment and debug are recipes that set keys of the others.
GROUPS = ("model", "dataset", "optim", "loss", "trainer", "eval", "experiment", "debug", "paths")
SECTIONS = tuple(group for group in GROUPS if group not in ("experiment", "debug"))

PLUGINS = ("optuna", "submitit_slurm", "submitit_local")  # Hydra plugins behind genctl[sweep]


def config_dir() -> Path:
    """The packaged ``genctl/configs`` of an installed wheel, else the source tree's ``configs``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise GenctlError(f"genctl's configs are missing: neither {here / 'configs'} nor {here.parent / 'configs'} exists")


def hydra_version_base() -> dict[str, str]:
    """The ``version_base`` argument for ``hydra.main`` and ``initialize_config_dir``, as keyword arguments.

    Hydra 1.3 needs ``version_base="1.3"`` for its current behaviour (without it, 1.1's: changing the
    working directory); from 1.4 that behaviour is the only one and passing the argument is deprecated.
    """
    from hydra import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return {} if (major, minor) >= (1, 4) else {"version_base": "1.3"}


def group_choices(group: str) -> list[str]:
    """The options of a config group (``model`` -> ``["ae", "vae", ...]``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def plain(value: Any) -> Any:
    """OmegaConf containers -> Python lists/dicts; leave everything else alone."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, (list, tuple)) and all(_check_type(v, args[0]) for v in value if args)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def build(what: str, factory: Callable[..., T], options: DictConfig | dict, **fixed: Any) -> T:
    """Call ``factory(**options, **fixed)`` after checking names and types against its signature.

    ``what`` names the config node in messages (``"model 'vae'"``). Every error is one line
    that says which key is wrong and what it accepts.
    """
    options = {k: plain(v) for k, v in dict(options).items()}
    params = inspect.signature(factory).parameters
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    accepted = [n for n in params if n not in fixed and n != "self"]
    for key, value in options.items():
        if key not in params or key in fixed:
            raise GenctlError(f"{what} has no option '{key}'; its options: {', '.join(accepted)}")
        hint = hints.get(key, params[key].annotation)
        if not _check_type(value, hint):
            raise GenctlError(f"{what}: {key}={value!r} is not valid (expected {_describe(hint)})")
    missing = [n for n in accepted if n not in options and params[n].default is inspect.Parameter.empty]
    if missing:
        raise GenctlError(f"{what} is missing option(s): {', '.join(missing)}")
    try:
        return factory(**options, **fixed)
    except ValueError as e:  # constructors raise ValueError for values that fail their own checks
        raise GenctlError(f"{what}: {e}") from e


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


def error_line(ex: BaseException) -> str | None:
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
