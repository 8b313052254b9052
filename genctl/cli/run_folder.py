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
  checkpoint leaves the run's record as it was;
- a folder where any name genctl or Hydra writes (``.hydra/`` and its files, train.log, the
  checkpoints, the grids, ``samples/``, ``tb/``, ...) is a symbolic link is refused: Hydra writes its
  files and opens the log before genctl's task runs, and would follow the link;
- an export folder, a file, a folder that cannot be written or a name the system refuses is not a
  run folder;
- one training at a time writes into a folder: it holds a lock there until it ends
  (:func:`hold_run_folder`), so a second one into the same folder is refused, not interleaved.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

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
from genctl.runs.atomic import LockHeld, atomic_write, exclusive_lock, refuse_links, shown, truncate, unwritable
from genctl.runs.untrusted import UntrustedFileError, load_yaml

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
RUN_FILES = (*TRAINED, "train.log", "samples.png", "reconstructions.png", "latent_map.png")
# Held by the training that writes into a run folder (hold_run_folder), removed when it ends.
LOCK = ".genctl.lock"
# Every name genctl and Hydra write in a run folder (besides Hydra's, in its output_subdir), and in a sweep folder.
WRITTEN = (*RUN_FILES, "samples", "tb", "export", LOCK)
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
SWEEP_WRITTEN = ("multirun.yaml", "summary.csv", "summary.md", "hparams")
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
        stored = load_yaml(path) or []
    except UntrustedFileError as e:
        raise GenctlError(f"{path} cannot be read ({e}); resume from a run folder genctl wrote") from e
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
    (folder / "tb" / "projector_config.pbtxt").unlink(missing_ok=True)  # lists the projector's earlier embeddings
    for kept in folder.glob("best@*min.pt"):  # trainer.keep_best_at's checkpoints
        kept.unlink()


def refuse_planted_links(folder: Path, output_subdir: str | None = ".hydra") -> None:
    """Refuse, in one line and before anything is written, a run folder in which a name genctl or
    Hydra writes is a symbolic link (Hydra's writers, and Python's log file, would follow it)."""
    hydra_files = [f"{output_subdir}/{name}" for name in HYDRA_FILES] if output_subdir else []
    for name in (*WRITTEN, *hydra_files):
        refuse_links(folder / name, folder)


def _refuse_folder(folder: Path, flag: str) -> None:
    """Refuse, in one line, a ``hydra.run.dir``/``hydra.sweep.dir`` that cannot hold a run: a file or a
    device, a folder that cannot be written, a name the system refuses (too long, too deep)."""
    why = unwritable(folder)
    if why:
        raise GenctlError(f"{flag}={shown(folder)} cannot hold a run: {why}; choose another {flag}")


def _refuse_export(folder: Path) -> None:
    """An export folder is not trained into: its model.safetensors would stay, and eval would score it."""
    from genctl.runs.checkpoint import EXPORT_WEIGHTS, is_export  # imports torch

    if folder.is_dir() and is_export(folder):
        raise GenctlError(
            f"hydra.run.dir={folder} is an export folder ({EXPORT_WEIGHTS}, written by genctl export): a run is not "
            "trained into it, where eval and sample would take its weights; choose another hydra.run.dir"
        )


def planned_run_dir(cfg: DictConfig) -> Path | None:
    """The run folder of a single run as this config resolves it (None where it cannot be resolved here)."""
    return _resolved(cfg, "hydra.run.dir")


def pinned_run_dir(folder: Path) -> str | None:
    """``hydra.run.dir=<folder>`` as an override that Hydra reads back as exactly ``folder``, so that
    Hydra writes into the folder the dispatcher checked and holds (``${now:...}`` would resolve anew);
    None where no quoting does."""
    value = str(folder)
    # Hydra's quoted strings: a backslash is literal unless a run of them precedes a quote or the end
    # (each then written twice), and a quote is written \'
    quoted = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
    line = f"hydra.run.dir='{quoted}'"
    try:
        (parsed,) = OverridesParser.create().parse_overrides([line])
    except OverrideParseException:
        return None
    return line if parsed.value() == value and "${" not in value else None


@contextmanager
def hold_run_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for one training until it ends: a second ``genctl train`` into it (the same
    explicit hydra.run.dir, a resume of a run that is training) is refused in one line before it writes.

    The lock is ``fcntl.flock`` on :data:`LOCK` (:func:`genctl.runs.atomic.exclusive_lock`): the
    system releases it when its process ends in any way, a SIGKILL included, so a lock file left
    behind never blocks a later run; a restarted torchrun attempt or a resume takes it again.
    """
    _refuse_folder(folder, "hydra.run.dir")
    held = ExitStack()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held.enter_context(exclusive_lock(folder / LOCK))
    except LockHeld as e:
        by = f" (process {e.holder})" if e.holder.isdigit() else ""
        raise GenctlError(
            f"{folder} is being written by another genctl train{by}: two runs never share a folder; "
            "wait for it to end, or choose another hydra.run.dir"
        ) from None
    except OSError as e:
        raise GenctlError(f"hydra.run.dir={shown(folder)} cannot hold a run: {e.strerror}; choose another hydra.run.dir") from e
    with held:
        yield


def claim_run_folder(cfg: DictConfig, multirun: bool) -> None:
    """Refuse to train into a folder that holds a run, unless it is resumed there or ``overwrite=true``
    (which removes the earlier run's files first). Under ``-m``: the job folders of the sweep folder.
    Refused as well, whatever it holds: a folder that cannot be one (:func:`_refuse_folder`), an
    export folder, and one where a name genctl or Hydra writes is a link (:func:`refuse_planted_links`).

    Every torchrun worker checks before the workers meet, so none has written yet and all agree.
    A restarted job (torchrun's restarts, SLURM's requeues) continues in the folder its first attempt
    was let into (``genctl.distributed.restart_checkpoint``).
    """
    subdir = cfg.hydra.output_subdir
    if multirun:
        sweep = _resolved(cfg, "hydra.sweep.dir")
        jobs: list[Path] = []
        if sweep is not None:
            _refuse_folder(sweep, "hydra.sweep.dir")
            for name in SWEEP_WRITTEN:
                refuse_links(sweep / name, sweep)
            for entry in sorted(sweep.iterdir()) if sweep.is_dir() else []:
                if entry.is_dir():  # a job folder (or a link to a folder, refused here)
                    refuse_links(entry, sweep)
                    refuse_planted_links(entry, subdir)
                    jobs.append(entry)
        folders = [job for job in jobs if holds_run(job)]
        where, flag = sweep, "hydra.sweep.dir"
    else:
        run = _resolved(cfg, "hydra.run.dir")
        if run is not None:
            _refuse_folder(run, "hydra.run.dir")
            refuse_planted_links(run, subdir)
            _refuse_export(run)
        resumed_here = run is not None and cfg.resume is not None and run_of(cfg.resume).resolve() == run.resolve()
        folders = [run] if run is not None and not resumed_here and holds_run(run) else []
        where, flag = run, "hydra.run.dir"
    if not folders or restart_count() > 0:
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
    was = dict(_sections(load_checkpoint(path, resuming=True)["config"]))
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
            # what ended the run is what is reported; a record that cannot be put back adds no traceback to it
            with suppress(GenctlError, OSError):
                _put_back(run, record, log_size)
        raise


def _put_back(run: Path, record: dict[Path, bytes], log_size: int | None) -> None:
    """Restore ``run``'s ``.hydra`` record and its log as :func:`record_kept_on_failure` found them,
    through genctl's writer (a link there is not followed)."""
    for path in (run / ".hydra").glob("*.yaml"):
        if path not in record:
            path.unlink()
    for path, data in record.items():
        atomic_write(path, lambda f, data=data: f.write(data), "the run's record", run)
    log = run / "train.log"
    if log_size is None:
        log.unlink(missing_ok=True)
    elif log.is_file():
        truncate(log, log_size)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` and when it was last written (None: no file)."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_ino, s.st_mtime_ns, s.st_size
