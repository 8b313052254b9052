"""``genctl export``: a trained model as a folder to hand over, which loads without pickle.

A checkpoint holds everything needed to continue training (optimizer moments, every RNG, the
data order) and is a pickle, however restricted. An export holds only what using the model needs:

- ``model.safetensors``: the weights :func:`genctl.runs.checkpoint.restore_model` uses (the moving
  average where the run kept one), and in its header, as JSON, the checkpoint format, the shape of
  the data, whether it is binary, and which checkpoint and step the weights come from;
- ``config.yaml``: the run's resolved training config (the model section rebuilds the model through
  genctl's registry, the dataset section finds its data);
- ``card.json`` and ``README.md``: the model card (model, parameters, data protocol, weights, and the
  test NLL with its estimator from the run's metrics.json).

:func:`genctl.runs.checkpoint.resolve_checkpoint` and ``load_checkpoint`` read such a folder as
they read a checkpoint, so ``genctl eval``, ``genctl sample`` and ``genctl.load`` take it as they
take a run; ``genctl eval`` files its result in the export's own metrics.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save

from genctl.errors import GenctlError
from genctl.models.base import GenerativeModel
from genctl.runs.atomic import atomic_write, check_writable
from genctl.runs.checkpoint import EXPORT_HEADER, FORMAT, load_checkpoint, restore_model
from genctl.runs.folder import BEST, EXPORT_CARD, EXPORT_CONFIG, EXPORT_WEIGHTS, RunFolder, is_export, resolve_checkpoint
from genctl.runs.record import FILENAME, NLL, TEST, Evaluation, RunRecord, evaluation_name
from genctl.version import __version__

README = "README.md"
FILES = (EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_CARD, README)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_checkpoint` wrote, and how its size compares with the checkpoint's."""

    folder: Path
    checkpoint: Path
    nbytes: int  # the export's files together
    weights_nbytes: int
    checkpoint_nbytes: int
    nll: NLL | None

    def summary(self) -> str:
        """One line for the log: where from, where to, and the sizes in bytes."""
        share = 100 * self.nbytes / self.checkpoint_nbytes
        return (
            f"exported {self.checkpoint} to {self.folder}: {self.nbytes:,} bytes ({EXPORT_WEIGHTS} {self.weights_nbytes:,}) "
            f"vs {self.checkpoint.name} {self.checkpoint_nbytes:,} bytes ({share:.0f}%)"
        )


def export_checkpoint(ckpt: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Exported:
    """Export a run's ``best.pt`` (or the checkpoint file ``ckpt``) into ``out`` (default
    ``<run>/export``). A folder that holds an earlier export is replaced only with ``overwrite``
    (its metrics.json goes too: it scored the earlier weights); any other non-empty folder is refused."""
    path = resolve_checkpoint(ckpt, prefer=BEST)
    if path.suffix == ".safetensors":
        raise GenctlError(f"{path.parent} is an export already; pass a run folder or one of its .pt checkpoints")
    folder = Path(str(out)).expanduser() if out is not None else RunFolder(path.parent).export
    root = folder if out is not None else path.parent  # a planted RUN/export link is refused, not followed
    check_writable(folder / EXPORT_WEIGHTS, "the export", "pass out=DIR in a writable folder", root)
    _check_room(folder, path.parent, overwrite)
    state = load_checkpoint(path)
    model = restore_model(state, path)
    header = {
        "format": FORMAT,
        "genctl_version": __version__,
        "data_shape": list(state["data_shape"]),
        "binary": bool(state["binary"]),
        "progress": {key: state.get("progress", {}).get(key) for key in ("step", "epoch")},
        # not read back: which weights restore_model took (the moving average where the run kept one), and from where
        "source": {"checkpoint": path.name, "weights": "ema" if isinstance(state.get("ema"), dict) else "trained"},
    }
    record = RunRecord.read(path.parent, missing_ok=True)
    found = _test_of(record, path.name)
    card = _card(model, state["config"], header, path, record.protocol, found)
    # clones: safetensors refuses tensors that share memory (views, tied weights), and needs them contiguous
    tensors = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    contents = {
        EXPORT_CONFIG: yaml.safe_dump(state["config"], sort_keys=False).encode(),
        EXPORT_CARD: (json.dumps(card, indent=2) + "\n").encode(),
        README: _readme(card).encode(),
        EXPORT_WEIGHTS: save(tensors, metadata={EXPORT_HEADER: json.dumps(header)}),  # last: without it, no export loads
    }
    (folder / FILENAME).unlink(missing_ok=True)
    for name, data in contents.items():
        atomic_write(folder / name, lambda f, data=data: f.write(data), "the export file", root)
    return Exported(
        folder=folder,
        checkpoint=path,
        nbytes=sum((folder / name).stat().st_size for name in FILES),
        weights_nbytes=(folder / EXPORT_WEIGHTS).stat().st_size,
        checkpoint_nbytes=path.stat().st_size,
        nll=found[2] if found else None,
    )


def _check_room(folder: Path, run: Path, overwrite: bool) -> None:
    """Refuse, before anything is read or written, a folder the export would clobber or hide a run in."""
    if folder.resolve() == run.resolve():
        default = RunFolder(run).export
        raise GenctlError(f"out={folder} is the run folder itself; export into a folder of its own (default: {default})")
    if folder.exists() and not folder.is_dir():
        raise GenctlError(f"out={folder} is a file; pass a folder")
    held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not held:
        return
    if not is_export(folder):
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise GenctlError(f"out={folder} is not empty and holds no export ({shown}); pass a new or empty folder")
    if not overwrite:
        raise GenctlError(f"{folder} already holds an export; pass overwrite=true to replace it, or out=DIR for another folder")


def _test_of(record: RunRecord, checkpoint: str) -> tuple[str, Evaluation, NLL] | None:
    """The test evaluation of ``checkpoint`` in its run's record (its name there, itself, its NLL).
    For best.pt the run's own end-of-training test comes first (the number genctl compare shows)."""
    names = [TEST] if checkpoint == BEST else []
    for name in [*names, evaluation_name(TEST, checkpoint)]:
        nll = record.evaluations[name].best_nll() if name in record.evaluations else None
        if nll is not None:
            return name, record.evaluations[name], nll
    return None


def _card(
    model: GenerativeModel,
    config: dict[str, Any],
    header: dict[str, Any],
    path: Path,
    protocol: str | None,
    found: tuple[str, Evaluation, NLL] | None,
) -> dict[str, Any]:
    """The model card as data (``card.json``); ``found``: the test in metrics.json (:func:`_test_of`)."""
    test = None
    if found:
        name, evaluation, nll = found
        test = {"nll": nll.name, "nats": nll.nats, "bits_per_dim": nll.bits_per_dim, "estimator": nll.estimator}
        test.update(about=evaluation.about, recorded_as=f"{FILENAME} {name}")
    ema = config.get("trainer", {}).get("ema")
    averaged = f"exponential moving average of the trained weights (trainer.ema={ema})"
    return {
        "genctl_version": __version__,
        "model": config["model"]["name"],
        "params": sum(p.numel() for p in model.parameters()),
        "data_shape": header["data_shape"],
        "binary": header["binary"],
        # what the data is, not where this machine read it from
        "dataset": {key: value for key, value in config.get("dataset", {}).items() if key not in ("root", "download")},
        "protocol": protocol,
        "weights": averaged if header["source"]["weights"] == "ema" else "the trained weights",
        "source": {"run": path.parent.name, "checkpoint": path.name, **header["progress"]},
        "test": test,
        "files": {
            EXPORT_WEIGHTS: "the weights (safetensors; its header holds data_shape, binary and the format as JSON)",
            EXPORT_CONFIG: "the training config: model options, dataset and protocol",
            EXPORT_CARD: "this card as data",
        },
    }


def _readme(card: dict[str, Any]) -> str:
    """The model card for people: what the model is, what it scores on which data, how to use it."""
    test = card["test"]
    nll = (
        f"{test['nats']:.2f} nats ({test['bits_per_dim']:.4f} bits/dim) on the test split, {test['estimator']}"
        if test
        else "not measured in the run's metrics.json: run `genctl eval ckpt=path/to/this/folder`"
    )
    source = card["source"]
    rows = [
        ("model", f"{card['model']} ({card['params']:,} parameters; options in config.yaml)"),
        ("data", card["protocol"] or f"{card['dataset'].get('name')} (see config.yaml)"),
        ("images", f"{'x'.join(map(str, card['data_shape']))}, {'binary' if card['binary'] else '8-bit'}"),
        ("weights", card["weights"]),
        ("test NLL", nll),
        ("from", f"{source['checkpoint']} of run {source['run']}" + (f" (step {source['step']})" if source["step"] else "")),
    ]
    lines = [
        f"# {card['model']} on {card['dataset'].get('name')}",
        "",
        f"Exported by genctl {card['genctl_version']}: weights in safetensors and config in YAML, no pickle, no optimizer state.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "## Use",
        "",
        "```python",
        "import genctl",
        'model = genctl.load("path/to/this/folder")  # the genctl model, in eval mode',
        "images = model.sample(16)  # [16, C, H, W] in [0, 1]",
        'x = genctl.dataset("path/to/this/folder").fixed("test")  # the test images, as genctl eval scores them',
        "print(genctl.nll(model, x))  # what genctl eval reports",
        "```",
        "",
        "```",
        "genctl eval ckpt=path/to/this/folder  # writes metrics.json here",
        "genctl sample ckpt=path/to/this/folder n=64",
        "```",
        "",
    ]
    return "\n".join(lines)
