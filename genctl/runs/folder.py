"""A run folder: the name of everything genctl and Hydra write in it, and the rules of who may write there.

Every module finds a run's files through :class:`RunFolder` (nothing else in genctl spells one of
these names), and every rule about the folder as a whole lives here:

- ``resume=RUN`` replays RUN's stored overrides, but only what genctl itself stores there (a group
  choice genctl ships, a plain key of its own sections): a run folder is data someone may hand
  over, Hydra loads whatever YAML a group choice's path names and instantiates whatever a
  ``_target_`` in ``hydra.*`` names; anything else refuses the resume (:func:`replayed_overrides`);
- a folder that already holds a run is not trained into unless the run is resumed there or
  ``overwrite=true`` says to replace it (:func:`claim`), which removes the earlier run's files by name;
- a resume whose settings cannot continue the run (another model, data split, batch size, seed,
  optimizer) is refused before anything is written (:func:`check_continuation`), and one that fails
  before it writes a checkpoint leaves the run's record as it was (:meth:`RunFolder.kept_on_failure`);
- a folder where any name genctl or Hydra writes is a symbolic link is refused: Hydra writes its
  files and opens the log before genctl's task runs, and would follow the link;
- an export folder, a file, a folder that cannot be written or a name the system refuses is not a
  run folder;
- one training at a time writes into a folder: it holds a lock there until it ends
  (:meth:`RunFolder.hold`), so a second one into the same folder is refused, not interleaved;
- a restarted job (torchrun's restarts, SLURM's requeues) continues from the folder's last.pt
  (:meth:`RunFolder.restart_checkpoint`).

Files are written through :mod:`genctl.runs.atomic` (a temporary file renamed into place, never
through a link).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genctl.config import GROUPS, SECTIONS, error_line, group_choices
from genctl.errors import GenctlError
from genctl.runs.atomic import LockHeld, atomic_write, exclusive_lock, refuse_links, shown, truncate, unwritable
from genctl.runs.untrusted import UntrustedFileError, load_yaml

BEST = "best.pt"  # the checkpoint of the lowest validation loss; what eval, sample and export take by default
LAST = "last.pt"  # the latest checkpoint, with everything a resume needs
RECORD = "metrics.json"  # the run's record (genctl.runs.record)
HISTORY = "history.jsonl"  # one line per validation: the curves genctl compare draws
LOG = "train.log"
TENSORBOARD = "tb"
SAMPLES = "samples"  # genctl sample's grids
EXPORT = "export"  # genctl export's default folder
HYDRA = ".hydra"  # Hydra's record of the run (its output_subdir)
OVERRIDES = "overrides.yaml"  # in HYDRA: the command line's overrides, which a resume replays
HYDRA_FILES = ("config.yaml", "hydra.yaml", OVERRIDES)
GRIDS = ("samples", "reconstructions", "latent_map")  # PNGs written at the end of training, as NAME.png
LOCK = ".genctl.lock"  # held by the training that writes into the folder, removed when it ends
# What training produces: a folder holding any of it holds a run. One that holds only a config and
# a log (a run stopped before its first validation) has nothing to lose, and is trained into.
TRAINED = (LAST, BEST, RECORD, HISTORY)
# What overwrite=true removes besides, by name (TensorBoard's event files in tb/ and kept marks too).
RUN_FILES = (*TRAINED, LOG, *(f"{name}.png" for name in GRIDS))
# Every name genctl and Hydra write in a run folder (besides Hydra's, in its output_subdir), and in a sweep folder.
WRITTEN = (*RUN_FILES, SAMPLES, TENSORBOARD, EXPORT, LOCK)
SUMMARY_CSV, SUMMARY_MD, HPARAMS = "summary.csv", "summary.md", "hparams"  # a sweep's summary (genctl.runs.summary)
SWEEP_WRITTEN = ("multirun.yaml", SUMMARY_CSV, SUMMARY_MD, HPARAMS)
# An export folder (genctl export): the weights, the config and the model card, no training state
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.yaml"
EXPORT_CARD = "card.json"
# What a resume replays from RUN/.hydra/overrides.yaml, and nothing else: a choice among the YAML
# files genctl ships for one of its config groups (genctl.config.GROUPS), and a key under one of the
# sections they fill (genctl.config.SECTIONS).
# A dotted key of plain names: no ``_target_``-like special key, no group path, no package.
KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
# genctl's settings about one launch rather than the run: not replayed. This launch has its own
# resume and overwrite; trackers and a search are given again (a warning names them).
LAUNCH_KEYS = ("resume", "overwrite")
NOT_REPLAYED = ("logger", "tracking", "hparams_search")
# A continuation keeps these as the run has them (a section: all its keys, except the ones in EXCEPT).
CONTINUED = ("model", "dataset", "trainer.batch_size", "trainer.seed", "optim.name")
EXCEPT = {"dataset": ("root", "download")}  # where the data is read from may change; the data may not
NOT_SET = object()


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the paths of what is written in it."""

    path: Path

    @classmethod
    def of(cls, given: str | Path) -> RunFolder:
        """The run folder of a run folder or of a checkpoint file in one (``resume=``, ``ckpt=``)."""
        path = Path(str(given)).expanduser()
        return cls(path if path.is_dir() else path.parent)

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def record(self) -> Path:
        return self.path / RECORD

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def export(self) -> Path:
        return self.path / EXPORT

    @property
    def overrides(self) -> Path:
        return self.path / HYDRA / OVERRIDES

    @property
    def config(self) -> Path:
        """The run's resolved config as Hydra wrote it."""
        return self.path / HYDRA / HYDRA_FILES[0]

    def grid(self, name: str) -> Path:
        """The PNG of the image grid ``name`` (one of :data:`GRIDS`) written at the end of training."""
        return self.path / f"{name}.png"

    def codes(self, split: str) -> Path:
        """genctl encode's file of the ``split``'s codes."""
        return self.path / f"codes_{split}.safetensors"

    def kept(self, minutes: float) -> Path:
        """best.pt as it stood at ``minutes`` of the budget's clock (``trainer.keep_best_at``)."""
        return self.path / f"best@{minutes:g}min.pt"

    def holds_run(self) -> list[str]:
        """What the folder holds of a run's results (empty: no run there)."""
        return [name for name in TRAINED if (self.path / name).exists()]

    def restart_checkpoint(self) -> Path | None:
        """last.pt where this is a restart nobody told where to resume (torchrun restarted the
        processes, SLURM requeued the job): the folder is the one the attempt before trained in.
        Every rank calls this, and all get the same answer (restart counts can differ across nodes)."""
        from genctl import distributed  # imports torch

        return self.last if distributed.largest_on_any_rank(distributed.restart_count()) > 0 and self.last.is_file() else None

    def clear(self) -> None:
        """Remove what an earlier run wrote (by name: nothing else in the folder is touched)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in HYDRA_FILES:
            (self.path / HYDRA / name).unlink(missing_ok=True)
        for events in self.tensorboard.glob("events.out.tfevents.*"):
            events.unlink()
        (self.tensorboard / "projector_config.pbtxt").unlink(missing_ok=True)  # lists the projector's earlier embeddings
        for kept in self.path.glob("best@*min.pt"):
            kept.unlink()

    def refuse_planted_links(self, output_subdir: str | None = HYDRA) -> None:
        """Refuse, in one line and before anything is written, a folder in which a name genctl or
        Hydra writes is a symbolic link (Hydra's writers, and Python's log file, would follow it)."""
        hydra_files = [f"{output_subdir}/{name}" for name in HYDRA_FILES] if output_subdir else []
        for name in (*WRITTEN, *hydra_files):
            refuse_links(self.path / name, self.path)

    def refuse_unusable(self, flag: str) -> None:
        """Refuse, in one line, a ``hydra.run.dir``/``hydra.sweep.dir`` that cannot hold a run: a file or
        a device, a folder that cannot be written, a name the system refuses (too long, too deep)."""
        why = unwritable(self.path)
        if why:
            raise GenctlError(f"{flag}={shown(self.path)} cannot hold a run: {why}; choose another {flag}")

    def refuse_export(self) -> None:
        """An export folder is not trained into: its model.safetensors would stay, and eval would score it."""
        if self.path.is_dir() and is_export(self.path):
            raise GenctlError(
                f"hydra.run.dir={self.path} is an export folder ({EXPORT_WEIGHTS}, written by genctl export): a run is not "
                "trained into it, where eval and sample would take its weights; choose another hydra.run.dir"
            )

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the folder for one training until it ends: a second ``genctl train`` into it (the same
        explicit hydra.run.dir, a resume of a run that is training) is refused in one line before it writes.

        The lock is ``fcntl.flock`` on :data:`LOCK` (:func:`genctl.runs.atomic.exclusive_lock`): the
        system releases it when its process ends in any way, a SIGKILL included, so a lock file left
        behind never blocks a later run; a restarted torchrun attempt or a resume takes it again.
        """
        self.refuse_unusable("hydra.run.dir")
        held = ExitStack()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(self.path / LOCK))
        except LockHeld as e:
            by = f" (process {e.holder})" if e.holder.isdigit() else ""
            raise GenctlError(
                f"{self.path} is being written by another genctl train{by}: two runs never share a folder; "
                "wait for it to end, or choose another hydra.run.dir"
            ) from None
        except OSError as e:
            raise GenctlError(
                f"hydra.run.dir={shown(self.path)} cannot hold a run: {e.strerror}; choose another hydra.run.dir"
            ) from e
        with held:
            yield

    @contextmanager
    def kept_on_failure(self) -> Iterator[None]:
        """A resume into the folder that fails before it writes a checkpoint leaves the run's record
        (``.hydra/``) and log as they were, so a later plain ``resume=`` replays what the run was trained with."""
        record = {p: p.read_bytes() for p in (self.path / HYDRA).glob("*.yaml")}
        log_size = self.log.stat().st_size if self.log.is_file() else None
        results = {name: _stamp(self.path / name) for name in TRAINED}
        try:
            yield
        except BaseException as e:
            failed = not isinstance(e, SystemExit) or e.code not in (0, None)
            if failed and results == {name: _stamp(self.path / name) for name in TRAINED}:
                # what ended the run is what is reported; a record that cannot be put back adds no traceback to it
                with suppress(GenctlError, OSError):
                    self._put_back(record, log_size)
            raise

    def _put_back(self, record: dict[Path, bytes], log_size: int | None) -> None:
        """Restore the ``.hydra`` record and the log as :meth:`kept_on_failure` found them, through
        genctl's writer (a link there is not followed)."""
        for path in (self.path / HYDRA).glob("*.yaml"):
            if path not in record:
                path.unlink()
        for path, data in record.items():
            atomic_write(path, lambda f, data=data: f.write(data), "the run's record", self.path)
        if log_size is None:
            self.log.unlink(missing_ok=True)
        elif self.log.is_file():
            truncate(self.log, log_size)


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is an export (its weights or its card are there; a run folder has neither)."""
    return (folder / EXPORT_WEIGHTS).is_file() or (folder / EXPORT_CARD).is_file()


def resolve_checkpoint(path: str | Path, prefer: str = BEST) -> Path:
    """A checkpoint file, a run folder (its ``prefer`` file, else last.pt), or an export folder
    (its ``model.safetensors``, whatever else the folder holds). ``prefer=LAST`` is a resume's
    request, which an export cannot serve: it holds no training state to continue."""
    p = Path(str(path)).expanduser()
    if p.is_dir() and is_export(p):
        p = p / EXPORT_WEIGHTS  # the export reader says what is missing or broken there
    elif p.is_dir():
        for name in (prefer, LAST, BEST):
            if (p / name).is_file():
                return p / name
        raise GenctlError(f"no checkpoint in {p}: expected {prefer} or {LAST} there")
    elif not p.is_file():
        raise GenctlError(f"checkpoint {p} does not exist; pass a .pt file, a run folder or an export folder")
    if p.suffix == ".safetensors" and prefer == LAST:
        raise GenctlError(f"{p.parent} is an export (weights and config, no training state): resume the run it came from")
    return p


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` and when it was last written (None: no file)."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_ino, s.st_mtime_ns, s.st_size


def resolved_path(cfg: DictConfig, key: str) -> Path | None:
    """A ``hydra.*`` path as Hydra will resolve it (``${hydra:...}`` included); None where it cannot be
    resolved here. ``${now:...}`` and ``${genctl.unique:}`` resolve anew: such a folder is a new one."""
    from hydra.core.hydra_config import HydraConfig

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


def claim(cfg: DictConfig, multirun: bool) -> None:
    """Refuse to train into a folder that holds a run, unless it is resumed there or ``overwrite=true``
    (which removes the earlier run's files first). Under ``-m``: the job folders of the sweep folder.
    Refused as well, whatever it holds: a folder that cannot be one, an export folder, and one where
    a name genctl or Hydra writes is a link.

    Every torchrun worker checks before the workers meet, so none has written yet and all agree.
    A restarted job continues in the folder its first attempt was let into.
    """
    subdir = cfg.hydra.output_subdir
    if multirun:
        sweep = resolved_path(cfg, "hydra.sweep.dir")
        jobs: list[RunFolder] = []
        if sweep is not None:
            RunFolder(sweep).refuse_unusable("hydra.sweep.dir")
            for name in SWEEP_WRITTEN:
                refuse_links(sweep / name, sweep)
            for entry in sorted(sweep.iterdir()) if sweep.is_dir() else []:
                if entry.is_dir():  # a job folder (or a link to a folder, refused here)
                    refuse_links(entry, sweep)
                    RunFolder(entry).refuse_planted_links(subdir)
                    jobs.append(RunFolder(entry))
        folders = [job for job in jobs if job.holds_run()]
        where, flag = sweep, "hydra.sweep.dir"
    else:
        path = resolved_path(cfg, "hydra.run.dir")
        run = None if path is None else RunFolder(path)
        if run is not None:
            run.refuse_unusable("hydra.run.dir")
            run.refuse_planted_links(subdir)
            run.refuse_export()
        resumed_here = run is not None and cfg.resume is not None and RunFolder.of(cfg.resume).path.resolve() == path.resolve()
        folders = [run] if run is not None and not resumed_here and run.holds_run() else []
        where, flag = path, "hydra.run.dir"
    from genctl.distributed import restart_count

    if not folders or restart_count() > 0:
        return
    if not cfg.overwrite:
        found = folders[0].holds_run()
        what = f"{len(folders)} runs" if multirun else "a run"
        resume = "" if multirun else f"continue it with resume={where}, "
        raise GenctlError(
            f"{where} already holds {what} ({', '.join(found)}): {resume}add overwrite=true to replace it, "
            f"or choose another {flag}"
        )
    if os.environ.get("RANK", "0") == "0":
        for folder in folders:
            folder.clear()
        print(f"genctl train: overwrite=true: removed the earlier run's files from {where}", file=sys.stderr)


def replayed_overrides(run: Path) -> tuple[list[str], list[str]]:
    """RUN's stored overrides a resume applies again, and the launch settings it leaves out.

    A run folder may come from anyone, and Hydra loads whatever file a group choice names and runs
    whatever ``hydra.callbacks`` names, so only what :func:`_refusal` accepts is replayed; any other
    entry refuses the whole resume before anything is composed, run or written.
    """
    path = RunFolder(run).overrides
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
            raise GenctlError(f"{path} is refused: '{line}' is not an override ({error_line(e)})") from e
        top = "" if o.is_hydra_override() else o.key_or_group.split(".")[0]
        if top in LAUNCH_KEYS + NOT_REPLAYED:
            left_out += [line] if top in NOT_REPLAYED else []
            continue
        why = _refusal(o)
        if why:
            raise GenctlError(
                f"{path} is refused: '{line}' {why}; a resume replays only a choice genctl ships for "
                f"{', '.join(GROUPS)} and plain keys of {', '.join(SECTIONS)}: "
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
    if o.key_or_group in GROUPS:
        value = o.value()
        if not isinstance(value, str) or value not in group_choices(o.key_or_group):
            return f"is not one of the {o.key_or_group} configs genctl ships"
        return None
    if not KEY.fullmatch(o.key_or_group) or o.key_or_group.split(".")[0] not in SECTIONS:
        return "is not a key of genctl's config"
    return None


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


def check_continuation(cfg: DictConfig, path: Path, trained: dict[str, Any]) -> None:
    """Refuse, before anything is written, a resume whose settings cannot continue the run of checkpoint
    ``path`` (trained with the config ``trained``): a key of :data:`CONTINUED` that differs from the
    checkpoint's config (a key the run's config lacks is a newer genctl's option, and is let through)."""
    was = dict(_sections(trained))
    try:
        sections = {name.partition(".")[0] for name in CONTINUED}
        now = dict(_sections({s: OmegaConf.to_container(cfg[s], resolve=True) for s in sections}))
    except OmegaConfBaseException as e:
        raise GenctlError(error_line(e) or str(e)) from e
    for key, value in was.items():
        if now.get(key, NOT_SET) != value:
            given = f"{key}={_show(now[key])}" if key in now else f"{key} unset"
            raise GenctlError(
                f"{given} cannot continue {path} (trained with {key}={_show(value)}): a resume keeps the model, "
                f"the dataset and its split, trainer.batch_size, trainer.seed and optim.name; start a new run to change them"
            )


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
