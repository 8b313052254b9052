"""What ``genctl train`` decides about run folders before Hydra writes into one.

Hydra writes ``.hydra/`` and the log into the run folder before the task starts, so what must
leave a folder untouched is decided here, by the dispatcher, from the config the pre-check
composed (:func:`genctl.cli.overrides.compose_command_line`):

- ``resume=RUN`` replays RUN's stored overrides, but only what genctl itself stores there (a group
  choice genctl ships, a plain key of its own sections): a run folder is data someone may hand
  over, Hydra loads whatever YAML a group choice's path names and instantiates whatever a
  ``_target_`` in ``hydra.*`` names; anything else refuses the resume.
- a folder that already holds a run is not trained into unless the run is resumed there or
  ``overwrite=true`` says to replace it;
- a resume whose settings cannot continue the run (another model, data split, batch size, seed,
  optimizer) is refused before anything is written, and one that fails before it writes a
  checkpoint leaves the run's record as it was.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genctl.cli.errors import describe
from genctl.config import group_choices
from genctl.distributed import restart_count
from genctl.errors import GenctlError

# What a resume replays from RUN/.hydra/overrides.yaml, and nothing else: a choice among the YAML
# files genctl ships for one of these groups, and a key under one of these sections.
REPLAYED_GROUPS = ("model", "dataset", "optim", "loss", "trainer", "eval", "experiment", "debug", "paths")
REPLAYED_SECTIONS = ("model", "dataset", "optim", "loss", "trainer", "eval", "paths")
# A dotted key of plain names: no ``_target_``-like special key, no group path, no package.
KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
# genctl's settings about one launch rather than the run: not replayed. This launch has its own
# resume and overwrite; trackers and a search are given again (a warning names them).
LAUNCH_KEYS = ("resume", "overwrite")
NOT_REPLAYED = ("logger", "tracking", "hparams_search")
# What training produces: a folder holding any of it holds a run. One that holds only a config and
# a log (a run stopped before its first validation) has nothing to lose, and is trained into.
TRAINED = ("last.pt", "best.pt", "metrics.json", "history.jsonl")
# What overwrite=true removes besides, by name (TensorBoard's event files in tb/ too).
RUN_FILES = (*TRAINED, "train.log", "samples.png", "reconstructions.png")
# A continuation keeps these as the run has them (a section: all its keys, except the ones in EXCEPT).
CONTINUED = ("model", "dataset", "trainer.batch_size", "trainer.seed", "optim.name")
EXCEPT = {"dataset": ("root", "download")}  # where the data is read from may change; the data may not
NOT_SET = object()


def run_of(resume: str | Path) -> Path:
    """The run folder of ``resume=`` (a run folder, or a checkpoint file in one)."""
    path = Path(str(resume)).expanduser()
    return path if path.is_dir() else path.parent


def replayed_overrides(run: Path) -> tuple[list[str], list[str]]:
    """RUN's stored overrides a resume applies again, and the launch settings it leaves out.

    A run folder may come from anyone, and Hydra loads whatever file a group choice names and runs
    whatever ``hydra.callbacks`` names, so only what :func:`_refusal` accepts is replayed; any other
    entry refuses the whole resume before anything is composed, run or written.
    """
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return [], []
    try:
        stored = yaml.safe_load(path.read_text()) or []
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise GenctlError(f"{path} is not readable YAML ({type(e).__name__}); resume from a run folder genctl wrote") from e
    if not isinstance(stored, list) or not all(isinstance(o, str) for o in stored):
        raise GenctlError(f"{path} is not a list of overrides; resume from a run folder genctl wrote")
    kept: list[str] = []
    left_out: list[str] = []
    for line in stored:
        try:
            (o,) = OverridesParser.create().parse_overrides([line])
        except OverrideParseException as e:
            raise GenctlError(f"{path} is refused: '{line}' is not an override ({describe(e)})") from e
        top = "" if o.is_hydra_override() else o.key_or_group.split(".")[0]
        if top in LAUNCH_KEYS + NOT_REPLAYED:
            left_out += [line] if top in NOT_REPLAYED else []
            continue
        why = _refusal(o)
        if why:
            raise GenctlError(
                f"{path} is refused: '{line}' {why}; a resume replays only a choice genctl ships for "
                f"{', '.join(REPLAYED_GROUPS)} and plain keys of {', '.join(REPLAYED_SECTIONS)}: "
                "give the setting on the command line if you trust it"
            )
        kept.append(line)
    return kept, left_out


def _refusal(o: Override) -> str | None:
    """Why a stored override is not one genctl itself would have stored (None: it is)."""
    if o.is_hydra_override():
        return "is Hydra's own setting"
    if o.type != OverrideType.CHANGE or o.package is not None or o.is_sweep_override():
        return "adds, deletes, packages or sweeps"
    if o.key_or_group in REPLAYED_GROUPS:
        value = o.value()
        if not isinstance(value, str) or value not in group_choices(o.key_or_group):
            return f"is not one of the {o.key_or_group} configs genctl ships"
        return None
    if not KEY.fullmatch(o.key_or_group) or o.key_or_group.split(".")[0] not in REPLAYED_SECTIONS:
        return "is not a key of genctl's config"
    return None


def holds_run(folder: Path) -> list[str]:
    """What ``folder`` holds of a run's results (empty: no run there)."""
    return [name for name in TRAINED if (folder / name).exists()]


def _resolved(cfg: DictConfig, key: str) -> Path | None:
    """A ``hydra.*`` path as Hydra will resolve it (``${hydra:...}`` included); None where it cannot be
    resolved here. ``${now:...}`` and ``${genctl.unique:}`` resolve anew: such a folder is a new one."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    try:
        hydra_config.set_config(cfg)
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except (OmegaConfBaseException, ValueError):
        return None
    finally:
        hydra_config.cfg = previous
    return None if value is None else Path(str(value)).expanduser()


def _clear(folder: Path) -> None:
    """Remove what an earlier run wrote into ``folder`` (by name: nothing else there is touched)."""
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).unlink(missing_ok=True)
    for events in (folder / "tb").glob("events.out.tfevents.*"):
        events.unlink()


def claim_run_folder(cfg: DictConfig, multirun: bool) -> None:
    """Refuse to train into a folder that holds a run, unless it is resumed there or ``overwrite=true``
    (which removes the earlier run's files first). Under ``-m``: the job folders of the sweep folder.

    Every torchrun worker checks before the workers meet, so none has written yet and all agree.
    A restarted job (torchrun's restarts, SLURM's requeues) continues in the folder its first attempt
    was let into (``genctl.distributed.restart_checkpoint``).
    """
    if restart_count() > 0:
        return
    if multirun:
        sweep = _resolved(cfg, "hydra.sweep.dir")
        folders = [job for job in sorted(sweep.iterdir()) if job.is_dir() and holds_run(job)] if sweep and sweep.is_dir() else []
        where, flag = sweep, "hydra.sweep.dir"
    else:
        run = _resolved(cfg, "hydra.run.dir")
        resumed_here = run is not None and cfg.resume is not None and run_of(cfg.resume).resolve() == run.resolve()
        folders = [run] if run is not None and not resumed_here and holds_run(run) else []
        where, flag = run, "hydra.run.dir"
    if not folders:
        return
    if not cfg.overwrite:
        found = holds_run(folders[0])
        what = f"{len(folders)} runs" if multirun else "a run"
        resume = "" if multirun else f"continue it with resume={where}, "
        raise GenctlError(
            f"{where} already holds {what} ({', '.join(found)}): {resume}add overwrite=true to replace it, "
            f"or choose another {flag}"
        )
    if os.environ.get("RANK", "0") == "0":
        for folder in folders:
            _clear(folder)
        print(f"genctl train: overwrite=true: removed the earlier run's files from {where}", file=sys.stderr)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _sections(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of what a continuation keeps, as ``config`` (a plain, resolved config) has it."""
    for name in CONTINUED:
        section, _, key = name.partition(".")
        node = config.get(section)
        if not isinstance(node, dict):
            continue
        if key:
            if key in node:
                yield name, node[key]
        else:
            yield from ((f"{section}.{k}", v) for k, v in node.items() if k not in EXCEPT.get(section, ()))


def check_continuation(cfg: DictConfig) -> None:
    """Refuse, before anything is written, a resume whose settings cannot continue the run: a key of
    :data:`CONTINUED` that differs from the checkpoint's config (a key the run's config lacks is a
    newer genctl's option, and is let through)."""
    from genctl.runs.checkpoint import load_checkpoint, resolve_checkpoint  # imports torch

    path = resolve_checkpoint(cfg.resume, prefer="last.pt")
    was = dict(_sections(load_checkpoint(path)["config"]))
    try:
        sections = {name.partition(".")[0] for name in CONTINUED}
        now = dict(_sections({s: OmegaConf.to_container(cfg[s], resolve=True) for s in sections}))
    except OmegaConfBaseException as e:
        raise GenctlError(describe(e) or str(e)) from e
    for key, value in was.items():
        if now.get(key, NOT_SET) != value:
            shown = f"{key}={_show(now[key])}" if key in now else f"{key} unset"
            raise GenctlError(
                f"{shown} cannot continue {path} (trained with {key}={_show(value)}): a resume keeps the model, "
                f"the dataset and its split, trainer.batch_size, trainer.seed and optim.name; start a new run to change them"
            )


@contextmanager
def record_kept_on_failure(run: Path) -> Iterator[None]:
    """A resume into ``run`` that fails before it writes a checkpoint leaves the run's record (``.hydra/``)
    and log as they were, so a later plain ``resume=`` replays what the run was trained with."""
    record = {p: p.read_bytes() for p in (run / ".hydra").glob("*.yaml")}
    log = run / "train.log"
    log_size = log.stat().st_size if log.is_file() else None
    results = {name: _stamp(run / name) for name in TRAINED}
    try:
        yield
    except BaseException as e:
        failed = not isinstance(e, SystemExit) or e.code not in (0, None)
        if failed and results == {name: _stamp(run / name) for name in TRAINED}:
            for path in (run / ".hydra").glob("*.yaml"):
                if path not in record:
                    path.unlink()
            for path, data in record.items():
                path.write_bytes(data)
            if log_size is None:
                log.unlink(missing_ok=True)
            elif log.is_file():
                os.truncate(log, log_size)
        raise


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` and when it was last written (None: no file)."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_ino, s.st_mtime_ns, s.st_size
