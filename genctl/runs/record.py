"""A run's record, ``metrics.json``: the one file every reader of a finished run looks at.

``genctl train`` writes it when training ends, ``genctl eval`` adds an evaluation to it, and
``genctl compare``, the sweep summary and the benchmark scripts read it. They all go through
:class:`RunRecord`, so what "the run's NLL" means (its tightest estimate) is decided in one place.

On disk the record is one flat JSON object, as it always was: the training facts (``model``,
``params``, ``epochs``, ...) at the top level, and each evaluation under its name, e.g.
``"test": {"nll_iwae": {"nats": .., "bits_per_dim": .., "estimator": "IWAE bound, k=100"}, "kl": ..}``,
with a line saying which data and checkpoint it scored under ``"test_split"``. Keys this version
does not know are kept and written back, so rewriting a newer file loses nothing.

Evaluations are keyed by name. The end-of-training test of best.pt is ``"test"``; ``genctl eval``
files its own under ``<split>@<checkpoint>`` (``test@best.pt``, ``val@last.pt``), so an evaluation
run while the run trains, or with another k, sits beside the final test instead of replacing it, and
training keeps the evaluations it did not write. :meth:`RunRecord.read` takes any top-level object
that has a ``<name>_split`` line as an evaluation, so files written before and after read the same,
and a reader that looks up ``"test"`` keeps finding the test of the run.

A sweep job that failed has a record too, holding the one-line ``error`` that ended it, so the
sweep's summary lists it beside the jobs that finished.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from genctl.errors import GenctlError
from genctl.runs.atomic import atomic_write
from genctl.runs.folder import RECORD as FILENAME

TEST = "test"  # the end-of-training test of best.pt
SPLITS = ("test", "val", "train")  # evaluation names that files written before the _split lines may hold alone
# The exact likelihood when the model has one; else the IWAE bound (never looser than the ELBO); else the ELBO.
NLL_EXACT, NLL_IWAE, NLL_ELBO = "nll_exact", "nll_iwae", "nll_elbo"
TIGHTEST_FIRST = (NLL_EXACT, NLL_IWAE, NLL_ELBO)


log = logging.getLogger("genctl")


@dataclass(frozen=True)
class NLL:
    """One estimate of the negative log-likelihood per image."""

    name: str  # nll_exact | nll_iwae | nll_elbo
    nats: float
    bits_per_dim: float | None
    estimator: str  # how it was estimated, e.g. "IWAE bound, k=100"


@dataclass
class Evaluation:
    """Means over one split: each ``nll_*`` as ``{"nats", "bits_per_dim", "estimator"[, "note"]}``,
    other numbers (``kl``, ``mse``, ``active_units``) and lists (``kl_per_unit``) as they are;
    ``about`` names the data and the checkpoint."""

    metrics: dict[str, Any]
    about: str | None = None

    def scalars(self) -> dict[str, float]:
        """Every number flat (nats for the likelihoods): one table column each. Lists (the KL of
        each latent unit) are no column: they stay in the file."""
        return {
            name: value["nats"] if isinstance(value, dict) else value
            for name, value in self.metrics.items()
            if not isinstance(value, list)
        }

    def best_nll(self) -> NLL | None:
        """The tightest likelihood estimate this evaluation holds; None for a model without one (an autoencoder)."""
        for name in TIGHTEST_FIRST:
            entry = self.metrics.get(name)
            if isinstance(entry, dict):
                return NLL(name, entry["nats"], entry.get("bits_per_dim"), entry.get("estimator", name))
        return None


@dataclass
class RunRecord:
    """What a run folder says about its run. A field is None when it was not recorded: the
    folder of a checkpoint that was only evaluated holds evaluations and nothing else."""

    model: str | None = None
    dataset: str | None = None
    binarize: str | None = None
    protocol: str | None = None  # the data's splits and binarization, in one line (DataSplits.protocol)
    params: int | None = None
    epochs: int | None = None
    steps: int | None = None
    stopped: str | None = None  # why training ended: completed | max_steps | max_time | interrupted
    error: str | None = None  # the one-line error that ended a failed run (a sweep job, a run that trained nothing)
    wall_time_s: float | None = None
    outside_steps_s: float | None = None  # of wall_time_s: validation, checkpoints, image grids and logs
    outside_steps_share: float | None = None
    outside_marks_s: float | None = None  # of outside_steps_s: best.pt kept at trainer.keep_best_at's marks (a benchmark's)
    cpu_time_s: float | None = None
    train_images_per_s: float | None = None
    peak_memory_mb: float | None = None
    precision: str | None = None  # what the training step ran in, and why where trainer.precision=auto chose
    best_epoch: int | None = None
    skipped_steps: int | None = None
    best_val_loss: float | None = None
    train_loss: float | None = None
    samples_per_s: float | None = None
    images: list[str] = field(default_factory=list)  # the grids written at the end of training
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, written back as they were

    def evaluation(self, name: str = TEST) -> Evaluation | None:
        """The evaluation ``name``; without one, the last that genctl eval filed as ``name@<checkpoint>``
        (a checkpoint that was only evaluated, or a run trained with ``trainer.test_at_end=false``)."""
        if name in self.evaluations:
            return self.evaluations[name]
        separate = [e for n, e in self.evaluations.items() if n.startswith(f"{name}@")]
        return separate[-1] if separate else None

    def best_nll(self, evaluation: str = TEST) -> NLL | None:
        """The tightest NLL estimate of one evaluation (exact, else IWAE, else ELBO); None if there is none."""
        found = self.evaluation(evaluation)
        return found.best_nll() if found else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object on disk: facts that were recorded, then ``<name>`` / ``<name>_split`` per evaluation."""
        out = {name: getattr(self, name) for name in _facts() if getattr(self, name) not in (None, [])}
        for name, evaluation in self.evaluations.items():
            out[name] = evaluation.metrics
            if evaluation.about is not None:
                out[f"{name}_split"] = evaluation.about
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        facts = _facts()
        record = cls(**{name: data[name] for name in facts if data.get(name) is not None})
        for name, value in data.items():
            if name not in facts and isinstance(value, dict) and (name in SPLITS or f"{name}_split" in data):
                record.evaluations[name] = Evaluation(value, data.get(f"{name}_split"))
        taken = {*facts, *record.evaluations, *(f"{name}_split" for name in record.evaluations)}
        record.extra = {name: value for name, value in data.items() if name not in taken}
        return record

    @classmethod
    def read(cls, run_dir: Path | str, missing_ok: bool = False) -> RunRecord:
        """The record in ``run_dir``; with ``missing_ok``, an empty one where none was written yet."""
        path = Path(run_dir) / FILENAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise GenctlError(f"{path} does not exist: train the run to the end or run genctl eval ckpt={run_dir}") from None
        except (OSError, ValueError) as e:  # ValueError: not JSON, or not text
            raise GenctlError(_unreadable(path, run_dir, " ".join(str(e).split()))) from None
        if not isinstance(data, dict):
            raise GenctlError(_unreadable(path, run_dir, f"a JSON {type(data).__name__}, not an object"))
        return cls.from_dict(data)

    def write(self, run_dir: Path | str) -> Path:
        """Write atomically (:func:`genctl.runs.atomic.atomic_write`), so that a reader (a sweep
        summary, genctl compare) or a kill mid-write never leaves or sees half a record."""
        path = Path(run_dir) / FILENAME
        text = json.dumps(self.to_dict(), indent=2, default=float) + "\n"  # default: numpy/torch scalars
        atomic_write(path, lambda f: f.write(text.encode()), "the run record")
        return path


def record_error(run_dir: Path | str, line: str) -> None:
    """File ``line`` as the error that ended the run in ``run_dir`` (a failed sweep job: the sweep's
    summary lists it), keeping what the record held; a record that cannot be written is logged, not raised."""
    try:
        record = RunRecord.read(run_dir, missing_ok=True)
        record.error = line
        record.write(run_dir)
    except (GenctlError, OSError) as unrecorded:
        log.error("the failure could not be recorded in %s: %s", run_dir, unrecorded)


def evaluation_name(split: str, checkpoint: str) -> str:
    """The name genctl eval files an evaluation under: never the end-of-training test's."""
    return f"{split}@{checkpoint}"


def _facts() -> list[str]:
    """The record's top-level scalar fields, in the order they are written."""
    return [f.name for f in fields(RunRecord) if f.name not in ("evaluations", "extra")]


def _unreadable(path: Path, run_dir: Path | str, reason: str) -> str:
    return f"{path} is not a readable run record ({reason}); move it aside and run genctl eval ckpt={run_dir} to write a new one"
