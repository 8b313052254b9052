"""What every entry genctl reads from a checkpoint must be: an allow-list of keys and their types.

``torch.load(weights_only=True)`` guarantees only tensors and plain containers. A file that holds a
string where genctl reads a mapping (``config.dataset``), a number where it reads weights
(``ema.weights``) or a list where it reads where training stood (``progress``) would fail deep
inside eval, sample, export or a resume, with a traceback. :func:`problem` checks a loaded
checkpoint against :data:`CHECKPOINT` (and a resumed one against :func:`training`) and names the
first entry that is not what ``genctl train`` writes. Entries genctl never reads are left alone:
they cannot reach any code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from genctl.runs.progress import Progress

NoneType = type(None)
NUMBER = (int, float)
PLAIN = (str, int, float, bool, NoneType)  # a config's values besides mappings and lists, as OmegaConf holds them


@dataclass(frozen=True)
class Entries:
    """A mapping that holds the ``required`` keys and may hold the ``optional`` ones, each of its
    spec; ``closed``: it holds no other key (its keys are passed on as keyword arguments)."""

    required: dict[str, Any] = field(default_factory=dict)
    optional: dict[str, Any] = field(default_factory=dict)
    closed: bool = False


@dataclass(frozen=True)
class Each:
    """A ``container`` (a mapping of string keys, or a sequence) whose every value is of ``spec``."""

    spec: Any
    container: type | tuple[type, ...] = dict


@dataclass(frozen=True)
class Fixed:
    """A sequence of exactly these specs, in order."""

    specs: tuple[Any, ...]


@dataclass(frozen=True)
class Tree:
    """A config as YAML holds it: mappings with string keys, lists and :data:`PLAIN` values."""


@dataclass(frozen=True)
class All:
    """A value that meets every one of these specs."""

    specs: tuple[Any, ...]


TENSORS = Each(torch.Tensor)
SECTION = Entries()  # a config section genctl reads: a mapping (its values are checked where they are built)
CONFIG = All(
    (
        Tree(),
        Entries(
            required={"model": Entries({"name": str}), "dataset": Entries({"name": str})},
            optional={name: SECTION for name in ("optim", "loss", "trainer", "eval", "paths", "tracking")},
        ),
    )
)
# What every reader may take: eval, sample and export read the weights (the average where there is
# one), the config and where training stood (step and epoch; an export holds only these, or None).
CHECKPOINT = Entries(
    optional={
        "genctl_version": str,
        "config": CONFIG,
        "model": TENSORS,
        "ema": Entries({"weights": TENSORS, "updates": int}),
        "progress": Each((*NUMBER, NoneType)),
    }
)
RNG = Entries(
    required={
        "torch": torch.Tensor,
        "numpy": Entries({"kind": str, "keys": torch.Tensor, "pos": int, "has_gauss": int, "gauss": NUMBER}),
        "python": Fixed((int, Each(int, (tuple, list)), (float, NoneType))),
        "data": torch.Tensor,
    },
    optional={"cuda": Each(torch.Tensor, (list, tuple))},
)


def training() -> Entries:
    """What a resume reads besides (the loop's restore): the optimizer's and the data
    order's state, every random stream, and where training stood, as exactly :class:`Progress`'s fields."""
    progress = {f.name: int if f.type in (int, "int") else NUMBER for f in fields(Progress)}
    return Entries(
        required={
            "optimizer": Entries({"state": dict, "param_groups": Each(Entries({"params": Each(int, list)}), list)}),
            "data": Entries({"generator": (torch.Tensor, NoneType), "order": (torch.Tensor, NoneType), "position": int}),
            "rng": RNG,
            "progress": Entries(optional=progress, closed=True),
        },
        optional={"scaler": dict, "scheduler": dict, "rng_ranks": Each(RNG, list)},
    )


def problem(value: Any, spec: Any, where: str = "") -> str | None:
    """How ``value`` (at ``where``, a dotted path) differs from ``spec``, or None where it does not."""
    if isinstance(spec, Entries):
        return _entries(value, spec, where)
    if isinstance(spec, Each):
        if not isinstance(value, spec.container):
            return _not(value, where, "a mapping" if spec.container is dict else "a list")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                return f"{where or 'it'} has the key {key!r}, not a string"
            found = problem(item, spec.spec, _at(where, key))
            if found:
                return found
        return None
    if isinstance(spec, Fixed):
        if not isinstance(value, (tuple, list)) or len(value) != len(spec.specs):
            return _not(value, where, f"a sequence of {len(spec.specs)}")
        return next((p for i, s in enumerate(spec.specs) if (p := problem(value[i], s, _at(where, i)))), None)
    if isinstance(spec, Tree):
        return _tree(value, where)
    if isinstance(spec, All):
        return next((p for s in spec.specs if (p := problem(value, s, where))), None)
    kinds = spec if isinstance(spec, tuple) else (spec,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        return _not(value, where, " or ".join("None" if k is NoneType else _a(k.__name__) for k in kinds))
    return None


def _entries(value: Any, spec: Entries, where: str) -> str | None:
    if not isinstance(value, dict):
        return _not(value, where, "a mapping")
    known = {**spec.required, **spec.optional}
    for key, sub in known.items():
        if key not in value:
            if key in spec.required:
                return f"{_at(where, key)} is missing"
            continue
        found = problem(value[key], sub, _at(where, key))
        if found:
            return found
    extra = [key for key in value if key not in known] if spec.closed else []
    return f"{_at(where, extra[0])} is not an entry genctl writes there" if extra else None


def _tree(value: Any, where: str) -> str | None:
    """:class:`Tree`, walked without recursion (the caller bounds its size and depth)."""
    pending = [(value, where)]
    while pending:
        node, at = pending.pop()
        if isinstance(node, dict):
            bad = next((key for key in node if not isinstance(key, str)), None)
            if bad is not None:
                return f"{at} has the key {bad!r}, not a string"
            pending.extend((child, _at(at, key)) for key, child in node.items())
        elif isinstance(node, list):
            pending.extend((child, _at(at, i)) for i, child in enumerate(node))
        elif not isinstance(node, PLAIN):
            return _not(node, at, "a plain value (text, a number, true/false or null)")
    return None


def _at(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)


def _a(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _not(value: Any, where: str, expected: str) -> str:
    return f"{where or 'it'} is {'None' if value is None else _a(type(value).__name__)}, not {expected}"
