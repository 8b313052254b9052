"""Checking a subcommand's command line with Hydra's public compose API before its ``@hydra.main`` runs.

Inside ``@hydra.main`` a composition error (unknown group choice, unknown key, bad syntax) is
reported by Hydra in several lines with its search path, and no public hook reaches it there.
Composing the same overrides first turns those errors into one line (:func:`genctl.config.error_line`)
before anything starts. Under ``-m`` every value of a swept config group is composed too, with the
other overrides, so ``-m model=vae,nope`` fails before the first job runs. What the check cannot
phrase it leaves to Hydra, which then reports it as it always does; ``HYDRA_FULL_ERROR=1`` shows
the full trace instead of the line.

A config that sets ``hydra.mode: MULTIRUN`` (``hparams_search=optuna``) gets ``--multirun`` on the
command line too: Hydra 1.4 refuses a run mode that changes during composition.

The composed config (of the first job) goes back to the dispatcher, which checks run folders
against it before Hydra writes into one (:mod:`genctl.runs.folder`), and pins the folder it
checked on the command line (:func:`pinned_run_dir`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override
from hydra.core.plugins import Plugins
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genctl.cli.errors import full_error
from genctl.config import config_dir, error_line, hydra_version_base
from genctl.errors import GenctlError

# Hydra's flags that leave the config as the overrides make it, each alias mapped to its long name.
CHECKED_FLAGS = {"-m": "--multirun", "-r": "--run", "-c": "--cfg", "-p": "--package", "--resolve": "--resolve"}
CHECKED_FLAGS.update({long: long for long in CHECKED_FLAGS.values()})
FLAGS_WITH_VALUE = ("--cfg", "--package")

# ``${genctl.unique:}``: a few random hex digits, the same wherever one config reads them (cached,
# and copied to every job of a sweep with the rest of Hydra's cache, as ``${now:...}`` is).
UNIQUE = "genctl.unique"


def register_resolvers() -> None:
    """genctl's resolvers, before anything composes a config that names them; registering again is a no-op."""
    if not OmegaConf.has_resolver(UNIQUE):
        OmegaConf.register_new_resolver(UNIQUE, lambda: secrets.token_hex(2), use_cache=True)


@dataclass(frozen=True)
class Composed:
    """The command line to hand to Hydra and, where it runs jobs, the config of the first one."""

    args: list[str]
    cfg: DictConfig | None = None  # hydra node included; None where nothing runs (--cfg) or Hydra reports the error
    multirun: bool = False


def _split(args: list[str]) -> tuple[set[str], list[str]] | None:
    """Hydra's flags and the overrides; None where another flag (help, info, another config) makes a check moot."""
    flags: set[str] = set()
    overrides: list[str] = []
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        name, has_value, _ = arg.partition("=")
        if name not in CHECKED_FLAGS:
            return None
        flags.add(CHECKED_FLAGS[name])
        if CHECKED_FLAGS[name] in FLAGS_WITH_VALUE and not has_value:
            next(rest, None)
    return flags, overrides


def _values(override: Override) -> Iterator[str]:
    """Each value a sweep runs, as override text; a glob (it picks existing choices only) and an interval give none."""
    if override.is_discrete_sweep() and not isinstance(override.value(), Glob):
        yield from override.sweep_string_iterator()


def _line(override: Override, value: str | None) -> list[str]:
    """The override as composed for one job: a sweep at ``value``, or left out where it has none."""
    if not override.is_sweep_override():
        return [override.input_line]
    return [] if value is None else [f"{override.get_key_element()}={value}"]


def _check(config_name: str, flags: set[str], overrides: list[str]) -> tuple[DictConfig, bool]:
    """Compose the job (and each swept group choice): its config, and whether it is a multirun."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = [next(_values(o), None) for o in parsed]
    lines = [_line(o, value) for o, value in zip(parsed, first)]

    def job(i: int | None = None, value: str | None = None) -> list[str]:
        return [line for j, o in enumerate(parsed) for line in (_line(o, value) if j == i else lines[j])]

    with initialize_config_dir(str(config_dir()), job_name=config_name, **hydra_version_base()):
        cfg = compose(config_name, job(), return_hydra_config=True)
        sweeps = [o for o in parsed if o.is_sweep_override()]
        multirun = "--multirun" in flags or ("--cfg" not in flags and cfg.hydra.mode == RunMode.MULTIRUN)
        if sweeps and not multirun:
            raise GenctlError(
                f"'{sweeps[0].input_line}' is a sweep: add -m (--multirun) to run one job per value, "
                "or write a list as key=[a,b] or a string as key='a,b'"
            )
        hydra_sweeps = [o.input_line for o in sweeps if o.is_hydra_override()]
        if hydra_sweeps:
            raise GenctlError(f"cannot sweep over Hydra's own settings: {', '.join(hydra_sweeps)}")
        for i, o in enumerate(parsed):
            if o.is_sweep_override() and o.key_or_group in cfg.hydra.runtime.choices:
                for value in _values(o):  # a group's choice decides which keys exist
                    if value != first[i]:
                        compose(config_name, job(i, value), return_hydra_config=True)
    return cfg, multirun and "--run" not in flags


def _targets(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(key, dotted name) of what Hydra imports and calls when the job starts: its callbacks, and
    the classes and factories of its logging."""
    for name, node in (cfg.hydra.callbacks or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            yield f"hydra.callbacks.{name}._target_", str(node._target_)
    for section in ("hydra_logging", "job_logging"):
        config = OmegaConf.to_container(cfg.hydra[section], resolve=False) if cfg.hydra.get(section) else {}
        for kind in ("handlers", "formatters", "filters"):
            for entry, options in (config.get(kind) or {}).items():
                for key, value in options.items() if isinstance(options, dict) else ():
                    if key in ("class", "()") and isinstance(value, str):
                        yield f"hydra.{section}.{kind}.{entry}.{key}", value


def _check_targets(cfg: DictConfig, multirun: bool) -> None:
    """Refuse in one line, before Hydra starts the job and reports it in several, a name Hydra's
    instantiation policy blocks (``os.remove``, ``builtins.eval``...) or cannot find, and a launcher
    or sweeper that is not an installed plugin. Each name is looked up as Hydra will look it up, with
    ``_partial_``: nothing is called here (Hydra calls it, once, when the job starts)."""
    for plugin in ("launcher", "sweeper") if multirun else ():  # what a multirun starts its jobs with
        name = OmegaConf.select(cfg, f"hydra.{plugin}._target_")
        if name is not None and str(name) not in Plugins.instance().class_name_to_class:
            raise GenctlError(
                f"hydra.{plugin}._target_={name} is not an installed Hydra plugin; pick one with hydra/{plugin}=NAME"
            )
    for key, name in _targets(cfg):
        try:
            instantiate({"_target_": name, "_partial_": True}, _recursive_=False)
        except InstantiationException as e:
            raise GenctlError(f"{key}={name}: {error_line(e)}") from e


def compose_command_line(config_name: str, args: list[str]) -> Composed:
    """The command line composed as Hydra will compose it; a one-line ``GenctlError`` where Hydra would refuse to."""
    register_resolvers()
    split = _split(args)
    if split is None:
        return Composed(args)
    flags = split[0]
    try:
        cfg, multirun = _check(config_name, *split)
        if "--cfg" not in flags:
            _check_targets(cfg, multirun)
    except GenctlError:
        raise
    except Exception as ex:  # noqa: BLE001 - what error_line() cannot phrase, Hydra reports when it composes
        if full_error():
            raise
        message = error_line(ex)
        if message is None:
            return Composed(args)
        raise GenctlError(message) from ex
    if multirun and not flags & {"--multirun", "--cfg"}:
        args = ["--multirun", *args]
    return Composed(args, None if "--cfg" in flags else cfg, multirun)


def check_overrides(config_name: str, args: list[str]) -> list[str]:
    """The command line to hand to Hydra; a one-line ``GenctlError`` where Hydra would refuse to compose it."""
    return compose_command_line(config_name, args).args
