"""The package's dependency direction: models and layers know nothing of evaluation or training."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genctl"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["models", "nn"])
def test_models_and_layers_never_import_evaluation_or_training(package):
    for path in sorted((PACKAGE / package).glob("*.py")):
        bad = {m for m in imported_modules(path) if m.startswith(("genctl.eval", "genctl.train", "genctl.cli"))}
        assert not bad, f"{path.name} imports {bad}"
