"""Checkpoints: plain tensors and containers only, written atomically, read with weights_only.

A checkpoint holds the state to continue training exactly (model, optimizer, every RNG, step,
epoch: ``genctl.train.state``) and the resolved config the model is rebuilt from through genctl's
registry. Nothing in it is code, and loading never unpickles arbitrary objects. Training, eval,
sample and the scripts all read checkpoints through this module.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genctl import __version__
from genctl.errors import GenctlError
from genctl.models.base import GenerativeModel, build_model
from genctl.runs.atomic import atomic_write
from genctl.runtime import resolve_device

FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`genctl.runs.atomic.atomic_write`); the temp
    files of writes a crash cut short are removed by the next successful write."""
    state = {"format": FORMAT, "genctl_version": __version__, **state}
    atomic_write(path, lambda f: torch.save(state, f), "checkpoint")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # one writer per run folder: these are dead
        stale.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path, prefer: str = "best.pt") -> Path:
    """A checkpoint file, or a run folder (its ``prefer`` file, else ``last.pt``)."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        for name in (prefer, "last.pt", "best.pt"):
            if (p / name).is_file():
                return p / name
        raise GenctlError(f"no checkpoint in {p}: expected {prefer} or last.pt there")
    if not p.is_file():
        raise GenctlError(f"checkpoint {p} does not exist; pass a .pt file or a run folder")
    return p


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a genctl checkpoint; every failure is one line naming the file and the problem.

    Only tensors and plain containers are unpickled (``weights_only``); a file holding anything
    else is refused, and the message never suggests the unsafe way round that.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a well-formed pickle naming objects outside the allowed ones
            raise GenctlError(
                f"checkpoint {path} is refused: it holds Python objects besides tensors and plain containers, which "
                f"could run code when loaded; only load checkpoints genctl wrote"
            ) from e
        raise GenctlError(f"checkpoint {path} is corrupt or not a genctl checkpoint ({type(e).__name__})") from e
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for files that are not checkpoints
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenctlError(f"checkpoint {path} is corrupt or not a genctl checkpoint ({first[:200]})") from e
    problem = _malformed(state)
    if problem:
        raise GenctlError(f"{path} is not a genctl checkpoint ({problem})")
    if state["format"] > FORMAT:
        raise GenctlError(
            f"checkpoint {path} has format {state['format']} from genctl {state.get('genctl_version')}; "
            f"this genctl ({__version__}) reads format <= {FORMAT}: upgrade genctl"
        )
    return state


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
    return None


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
    device = resolve_device(str(cfg.device))
    path = resolve_checkpoint(cfg.ckpt, prefer="best.pt")
    state = load_checkpoint(path)
    model = restore_model(state, path).to(device)
    train_cfg = OmegaConf.create(state["config"])
    if cfg.data_root is not None:
        train_cfg.dataset.root = str(cfg.data_root)
    return path, state, model, train_cfg
