"""Checkpoints: plain tensors and containers only, written atomically, read with weights_only.

A checkpoint holds the state to continue training exactly (model, optimizer, every RNG, step,
epoch: ``genctl.train.state``) and the resolved config the model is rebuilt from through genctl's
registry. Nothing in it is code, and loading never unpickles arbitrary objects. Training, eval,
sample and the scripts all read checkpoints through this module.

An export folder (``genctl export``, :mod:`genctl.runs.export`) is read here too, as the same kind
of state, without any unpickling: the weights from ``model.safetensors`` (whose header holds the
shape of the data and the format as JSON), the config from ``config.yaml`` through
:mod:`genctl.runs.untrusted` (a bounded read of a regular file, no YAML aliases). Every config a
checkpoint or an export holds is checked there before OmegaConf builds it.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open

from genctl import distributed
from genctl.errors import GenctlError
from genctl.models.base import GenerativeModel, build_model
from genctl.runs import schema
from genctl.runs.atomic import atomic_write
from genctl.runs.folder import BEST, EXPORT_CONFIG, EXPORT_WEIGHTS, resolve_checkpoint
from genctl.runs.untrusted import UntrustedFileError, check_config, load_yaml
from genctl.runtime import resolve_device
from genctl.version import __version__

FORMAT = 1
# An export folder's files: the weights (safetensors, with genctl's entry in its header), the training config, the card.
EXPORT_HEADER = "genctl"  # the header entry, a JSON object: these entries of the checkpoint, and the export's "source"
EXPORT_STATE = ("format", "genctl_version", "data_shape", "binary", "progress")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`genctl.runs.atomic.atomic_write`); the temp
    files of writes a crash cut short are removed by the next successful write."""
    state = {"format": FORMAT, "genctl_version": __version__, **state}
    atomic_write(path, lambda f: torch.save(state, f), "checkpoint")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # one writer per run folder: these are dead
        stale.unlink(missing_ok=True)


def copy_checkpoint(source: Path, path: Path) -> None:
    """``source`` (a checkpoint this run wrote) as it is now, under a second name, written as
    :func:`save_checkpoint` writes: a reader never sees half of it."""
    with open(source, "rb") as f:
        atomic_write(path, lambda out: shutil.copyfileobj(f, out), "checkpoint")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", resuming: bool = False) -> dict[str, Any]:
    """Read a genctl checkpoint; every failure is one line naming the file and the problem.

    Only tensors and plain containers are unpickled (``weights_only``); a file holding anything
    else is refused, and the message never suggests the unsafe way round that. An export's
    ``model.safetensors`` is read by :func:`read_export`, which unpickles nothing at all. Every
    entry genctl reads is checked against :mod:`genctl.runs.schema` first; ``resuming``: the
    training state a resume continues from too.
    """
    state = read_export(path, map_location) if path.suffix == ".safetensors" else _unpickle(path, map_location)
    problem = _malformed(state)
    if problem:
        raise GenctlError(f"{path} is not a genctl checkpoint ({problem})")
    if state["format"] > FORMAT:
        raise GenctlError(
            f"checkpoint {path} has format {state['format']} from genctl {state.get('genctl_version')}; "
            f"this genctl ({__version__}) reads format <= {FORMAT}: upgrade genctl"
        )
    problem = schema.problem(state, schema.training()) if resuming else None
    if problem:
        raise GenctlError(f"{path} is not a checkpoint genctl train can continue ({problem}); resume from a run genctl trained")
    return state


def _unpickle(path: Path, map_location: str | torch.device) -> Any:
    """A ``.pt`` checkpoint's contents, tensors and plain containers only."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a well-formed pickle naming objects outside the allowed ones
            raise GenctlError(
                f"checkpoint {path} is refused: it holds Python objects besides tensors and plain containers, which "
                f"could run code when loaded; only load checkpoints genctl wrote"
            ) from e
        raise GenctlError(f"checkpoint {path} is corrupt or not a genctl checkpoint ({type(e).__name__})") from e
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for files that are not checkpoints
        raise GenctlError(f"checkpoint {path} is corrupt or not a genctl checkpoint ({_first_line(e)})") from e


def read_export(weights: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """An export folder as the state a checkpoint holds (the header's :data:`EXPORT_STATE` entries,
    ``config`` and the weights as ``model``), read with safetensors, JSON and
    :func:`genctl.runs.untrusted.load_yaml`: no pickle anywhere."""
    folder = weights.parent
    again = f"export the run again (genctl export ckpt=RUN out={folder} overwrite=true)"
    if not weights.is_file():
        raise GenctlError(f"export {folder} has no {EXPORT_WEIGHTS}; {again}")
    try:
        with safe_open(weights, framework="pt", device=str(map_location)) as f:
            header = json.loads((f.metadata() or {}).get(EXPORT_HEADER, "null"))
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, SafetensorError, ValueError) as e:  # ValueError: the header entry is not JSON
        raise GenctlError(f"{weights} is corrupt or not a safetensors file ({_first_line(e)}); {again}") from e
    if not isinstance(header, dict):
        raise GenctlError(f"{weights} is not a genctl export: its header has no '{EXPORT_HEADER}' entry; {again}")
    try:
        config = load_yaml(folder / EXPORT_CONFIG)
    except UntrustedFileError as e:
        raise GenctlError(f"export {folder}: its {EXPORT_CONFIG} cannot be read ({e}); {again}") from e
    return {**{key: header[key] for key in EXPORT_STATE if key in header}, "config": config, "model": tensors}


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _malformed(state: Any) -> str | None:
    """What keeps ``state`` from being a checkpoint this module can read, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    kinds = {"format": int, "config": dict, "model": dict, "data_shape": list, "binary": bool}
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
            return f"its '{key}' entry is missing or not a {kind.__name__}"
    if len(state["data_shape"]) != 3 or not all(isinstance(d, int) and d > 0 for d in state["data_shape"]):
        return f"its data_shape {state['data_shape']} is not three positive sizes"
    if not isinstance(state["config"].get("model"), dict):
        return "its config has no model section"
    try:
        check_config(state["config"])
    except UntrustedFileError as e:
        return str(e)
    return schema.problem(state, schema.CHECKPOINT)


def load_weights(model: GenerativeModel, state: dict[str, Any], path: Path, averaged: bool = False) -> None:
    """Load a checkpoint's weights into ``model``; a mismatch names the stored model. ``averaged``:
    the moving average of the weights where the run kept one (``trainer.ema``), what evaluation
    and sampling use; else the trained weights, what a resumed run continues from."""
    stored = state["config"].get("model", {}).get("name")
    ema = state.get("ema") if averaged else None
    try:
        model.load_state_dict(ema["weights"] if isinstance(ema, dict) else state["model"])
    except (RuntimeError, KeyError) as e:
        raise GenctlError(
            f"checkpoint {path} holds a different model (model={stored}) than the one configured; "
            f"use a checkpoint of the same model and options"
        ) from e


def restore_model(state: dict[str, Any], path: Path) -> GenerativeModel:
    """Rebuild the model a checkpoint was trained with, through genctl's own registry of names.

    The stored config is data: only ``model.name`` and its options are read, and a name outside
    the registry (or a key such as ``_target_`` that no model accepts) is refused.
    """
    config = OmegaConf.create(state["config"])
    model = build_model(config.model, tuple(state["data_shape"]), bool(state["binary"]))
    load_weights(model, state, path, averaged=True)
    return model


def open_checkpoint(cfg: DictConfig) -> tuple[Path, dict[str, Any], GenerativeModel, DictConfig]:
    """``genctl eval`` and ``genctl sample``: (checkpoint path, state, model on ``cfg.device``, the
    training config, its dataset root replaced by ``cfg.data_root`` when given)."""
    device = distributed.local_device(resolve_device(str(cfg.device)))
    path = resolve_checkpoint(cfg.ckpt, prefer=BEST)
    state = load_checkpoint(path)
    model = restore_model(state, path).to(device)
    train_cfg = OmegaConf.create(state["config"])
    if cfg.data_root is not None:
        train_cfg.dataset.root = str(cfg.data_root)
    return path, state, model, train_cfg
