"""Every `genctl` command the README and docs/ show still works: each composes as Hydra will compose
it (unknown keys, group choices and sweep syntax are caught), and the ones that take seconds run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from genctl.cli.main import SUBCOMMANDS
from genctl.cli.overrides import compose_command_line

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)
COMMAND = re.compile(r"\s*(?:\w+=\S*\s+)*(?:genctl|torchrun|python -m genctl)\s")  # env settings, then the program
PLACEHOLDERS = {"<stamp>": "2026-01-01_12-00-00-123456-a1b2"}  # what a reader puts there: a run folder's name
HYDRA_APPS = {"train", "eval", "sample", "encode", "export"}  # each composes configs/<name>.yaml


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) of each fenced line that runs genctl, as `genctl ...`, `torchrun ... -m
    genctl ...` or `python -m genctl ...`; an error message shown in a block is not a command."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.splitlines():
                if not COMMAND.match(line):
                    continue
                words = shlex.split(line, comments=True)
                if "genctl" not in words:
                    continue
                at = words.index("genctl")
                if at > 0 and words[at - 1] != "-m":
                    continue
                if len(words) > at + 1 and not words[at + 1].endswith(":"):
                    found.append((page.name, shlex.join(words[at:])))
    return found


COMMANDS = documented_commands()


def test_the_pages_show_commands():
    """The extraction finds the README's tour and the guides' commands (it cannot silently find none)."""
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "USAGE.md", "SWEEPS.md", "TRACKERS.md", "PARALLEL.md"} <= pages
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_composes(page, line):
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    words = shlex.split(line)
    subcommand, args = words[1], words[2:]
    assert subcommand in SUBCOMMANDS, f"{page}: '{line}' names no genctl subcommand"
    if subcommand in HYDRA_APPS:
        composed = compose_command_line(subcommand, args)  # raises the one-line error a user would see
        assert composed.cfg is not None, f"{page}: '{line}' did not compose"


def test_the_api_guides_quick_run_and_export_work(tmp_path):
    """docs/API.md's two shell lines, run as shown: a seconds-long training, then its export."""
    lines = [c for p, c in COMMANDS if p == "API.md"]
    assert lines == ["genctl train debug=tiny hydra.run.dir=runs/tiny", "genctl export ckpt=runs/tiny"]
    for line in lines:
        done = subprocess.run([sys.executable, "-m", *shlex.split(line)], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    assert (tmp_path / "runs" / "tiny" / "export" / "model.safetensors").is_file()


def test_the_help_and_the_pages_link_only_pages_that_exist():
    from genctl.cli.main import usage

    named = re.findall(r"\b[A-Z]+\.md\b", usage())
    assert len(named) >= 10 and all((REPO / "docs" / name).is_file() for name in named), named
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
