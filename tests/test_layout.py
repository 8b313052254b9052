"""The package's dependency direction, read from the source (imports under TYPE_CHECKING and inside
functions included): each package imports only the ones below it, nothing but ``cli`` imports
``train``, and no module imports itself through others."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genctl"

BASE = {"errors", "version", "registry", "runtime", "config"}
# what of genctl each package (or top-level module) may import, besides itself
ALLOWED = {
    "errors": set(),
    "version": set(),
    "registry": {"errors"},
    "runtime": {"errors"},
    "config": {"errors"},
    "distributed": {"errors"},
    "nn": BASE,
    "models": BASE | {"nn"},
    "losses": BASE | {"nn", "models"},
    "data": BASE,
    "runs": BASE | {"distributed", "models"},
    "images": BASE | {"runs"},
    "eval": BASE | {"distributed", "nn", "models", "data", "runs", "images"},
    "api": BASE | {"distributed", "nn", "models", "data", "runs", "images", "eval"},
    "train": BASE | {"distributed", "nn", "models", "losses", "data", "runs", "images", "eval"},
    "cli": BASE | {"distributed", "nn", "models", "losses", "data", "runs", "images", "eval", "train"},
    "__init__": {"version", "api"},
    "__main__": {"cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The genctl modules ``path`` imports: ``from genctl import distributed`` imports genctl.distributed,
    ``from genctl.models.base import X`` imports genctl.models.base."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == "genctl" or name.startswith("genctl."):
                while name not in known:
                    name = name.rpartition(".")[0]
                found.add(name)
    return found


def part(module: str) -> str:
    """The package or top-level module ``module`` belongs to."""
    return "__init__" if module == "genctl" else module.split(".")[1]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(path, known) - {module} for module, path in known.items()}


def test_every_package_has_a_place_in_the_layers():
    assert {part(m) for m in graph()} <= set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_the_layers_below(package):
    bad = {
        f"{module} -> {target}"
        for module, targets in graph().items()
        if part(module) == package
        for target in targets
        if part(target) != package and part(target) not in ALLOWED[package]
    }
    assert not bad, sorted(bad)


def test_no_import_cycles():
    edges = graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(edges[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_the_check_finds_a_planted_cycle_and_a_layer_breach(tmp_path, monkeypatch):
    """The rules above can fail: a models module importing train is a breach, two modules
    importing each other a cycle."""
    root = tmp_path / "genctl"
    (root / "models").mkdir(parents=True)
    (root / "train").mkdir()
    (root / "__init__.py").write_text("")
    (root / "models" / "__init__.py").write_text("")
    (root / "train" / "__init__.py").write_text("")
    (root / "models" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genctl.train.b import B\n"
    )
    (root / "train" / "b.py").write_text("from genctl.models import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    edges = graph()
    assert edges["genctl.models.a"] == {"genctl.train.b"} and edges["genctl.train.b"] == {"genctl.models.a"}
    with pytest.raises(AssertionError, match="genctl.models.a -> genctl.train.b"):
        test_packages_import_only_the_layers_below("models")
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
