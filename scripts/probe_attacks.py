"""Hostile run folders and exports against an installed genctl: what it refuses, and what it lets run.

A run folder or an export may come from anyone. Three kinds of attack, each against a fresh copy
of a tiny trained run (or its export), through the `genctl` on PATH as a user would run it:

- replay: a planted line in RUN/.hydra/overrides.yaml (a group choice that is a path to a
  recipe whose Hydra callback would create a marker file, `hydra.*`, `+`/`~` edits, packages,
  `_target_`), then `genctl train resume=RUN`. Refused: exit 2, one line, no marker, the run
  folder byte-identical.
- link: a symbolic link planted where genctl writes (the run folder's files and folders, an export
  folder's samples), pointing at a victim file or folder, then the command that writes there.
  Refused: the victim byte-identical (and nothing new in a victim folder).
- hang: an export whose config.yaml is a YAML alias bomb or a link to /dev/zero, sizes that cannot
  fit in memory. Refused: exit 2 within the time limit, memory bounded.

Prints a Markdown table, one row per attack, and writes JSON (default
bench_out/probe_attacks.json); exits 1 if any attack was not refused.
Usage: python scripts/probe_attacks.py [--timeout 60] [--out bench_out/probe_attacks.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

TINY = ["debug=tiny", "trainer.max_steps=2", "trainer.test_at_end=false"]
ESCAPE = "../" * 40  # from any config group's folder up to /, whatever the install's depth


@dataclass
class Row:
    kind: str
    attack: str
    exit_code: int | None
    seconds: float
    refused: bool
    evidence: str


def genctl(args: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None on a time-out, stderr's last line, seconds) of `genctl ARGS`."""
    start = time.monotonic()
    try:
        out = subprocess.run(["genctl", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out", time.monotonic() - start
    lines = [line for line in out.stderr.replace("\r", "\n").splitlines() if line.strip()]
    return out.returncode, lines[-1] if lines else "", time.monotonic() - start


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (links not followed), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def planted_recipe(folder: Path, marker: Path) -> Path:
    """A YAML config whose Hydra callback creates ``marker``: the path a group choice would name."""
    folder.mkdir(parents=True, exist_ok=True)
    callback = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    (folder / "recipe.yaml").write_text("# @package _global_\n" + yaml.safe_dump({"hydra": {"callbacks": {"planted": callback}}}))
    return folder / "recipe"


def replay_attacks(base: Path, work: Path, timeout: float) -> list[Row]:
    marker = work / "marker.txt"
    recipe = planted_recipe(work / "evil", marker)
    escape = ESCAPE + str(recipe).lstrip("/")
    lines = [
        f"experiment={escape}",
        f"model={escape}",
        f"dataset={escape}",
        f"debug={escape}",
        f"optim={recipe}",
        f"hydra/launcher={escape}",
        f"experiment@_global_={escape}",
        f"+experiment={escape}",
        "+hydra.callbacks.planted._target_=builtins.open",
        "hydra.job.chdir=true",
        "++model.planted=1",
        "~trainer.grad_clip",
        "model._target_=builtins.open",
    ]
    rows = []
    for line in lines:
        run = work / "replay"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run, symlinks=True)
        stored = run / ".hydra" / "overrides.yaml"
        stored.write_text(yaml.safe_dump([*yaml.safe_load(stored.read_text()), line]))
        before = snapshot(run)
        code, last, seconds = genctl(["train", f"resume={run}", "trainer.max_steps=3"], work, timeout)
        ran = marker.exists()
        marker.unlink(missing_ok=True)
        same = snapshot(run) == before
        refused = code == 2 and not ran and same
        evidence = f"marker {'CREATED' if ran else 'absent'}, run {'unchanged' if same else 'CHANGED'}: {last}"
        rows.append(Row("replay", line.replace(ESCAPE, "../../../…/"), code, seconds, refused, evidence))
    return rows


def link_attacks(base: Path, export: Path, work: Path, timeout: float) -> list[Row]:
    """A link at each name genctl writes in a run folder (resumed) or an export (sampled)."""
    rows = []
    targets = ["samples.png", "reconstructions.png", "history.jsonl", "train.log", "metrics.json", "last.pt", "best.pt"]
    targets += [".hydra/config.yaml", ".hydra/overrides.yaml", "samples", "tb"]
    for name in targets:
        run = work / "linked"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run, symlinks=True)
        rows.append(_planted(run, name, ["train", f"resume={run}", "trainer.max_steps=3"], work, timeout, f"run/{name}"))
    for name, command in (
        ("samples/prior.png", ["sample", "n=4"]),
        ("samples/prior.pt", ["sample", "n=4", "save_tensor=true"]),
        ("samples", ["sample", "n=4", "save_tensor=true"]),
        ("metrics.json", ["eval", "eval.k=2"]),
    ):
        folder = work / "export"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(export, folder, symlinks=True)
        rows.append(_planted(folder, name, [command[0], f"ckpt={folder}", *command[1:]], work, timeout, f"export/{name}"))
    return rows


def _planted(folder: Path, name: str, command: list[str], work: Path, timeout: float, what: str) -> Row:
    """Replace ``folder/name`` by a link to a victim (a folder for a folder), run ``command``, check the victim."""
    victim = work / "victim"
    if victim.is_dir():
        shutil.rmtree(victim)
    victim.unlink(missing_ok=True)
    path = folder / name
    was_dir = path.is_dir()
    if was_dir:
        shutil.rmtree(path)
        victim.mkdir()
        (victim / "keep.txt").write_text("keep me")
    else:
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        victim.write_text("keep me")
    before = snapshot(victim) if was_dir else victim.read_bytes()
    path.symlink_to(victim, target_is_directory=was_dir)
    code, last, seconds = genctl(command, work, timeout)
    after = snapshot(victim) if was_dir else victim.read_bytes()
    intact = after == before
    refused = intact and code is not None
    evidence = f"victim {'intact' if intact else 'WRITTEN'}: {last}"
    return Row("link", f"{what} -> victim; genctl {command[0]}", code, seconds, refused, evidence)


def hang_attacks(export: Path, work: Path, timeout: float) -> list[Row]:
    rows = []
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    for what, plant in (
        (
            "export config.yaml: YAML alias bomb (1 KB)",
            lambda f: (f / "config.yaml").write_text(bomb + (f / "config.yaml").read_text()),
        ),
        (
            "export config.yaml -> /dev/zero",
            lambda f: ((f / "config.yaml").unlink(), (f / "config.yaml").symlink_to("/dev/zero")),
        ),
    ):
        folder = work / "hang"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(export, folder, symlinks=True)
        plant(folder)
        code, last, seconds = genctl(["eval", f"ckpt={folder}"], work, timeout)
        rows.append(Row("hang", what, code, seconds, code == 2, last))
    for what, args in (
        ("eval.metrics=[nll,fid] eval.num_samples=1000000000", ["eval.metrics=[nll,fid]", "eval.num_samples=1000000000"]),
        ("eval.k=9223372036854775807", ["eval.k=9223372036854775807"]),
        ("sample n=100000000000", None),
    ):
        command = ["sample", f"ckpt={export}", "n=100000000000"] if args is None else ["eval", f"ckpt={export}", *args]
        code, last, seconds = genctl(command, work, timeout)
        rows.append(Row("hang", what, code, seconds, code == 2, last))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one command may take before it counts as a hang")
    p.add_argument("--out", type=Path, default=Path("bench_out/probe_attacks.json"))
    a = p.parse_args()
    if shutil.which("genctl") is None:
        sys.exit("genctl is not on PATH: install it (pip install -e .) and run this again")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, export = work / "base", work / "base_export"
        for command in (["train", *TINY, f"hydra.run.dir={base}"], ["export", f"ckpt={base}", f"out={export}"]):
            code, last, _ = genctl(command, work, 300)
            if code != 0:
                sys.exit(f"could not prepare the run: genctl {' '.join(command)}: {last}")
        rows: list[Row] = []
        for attacks in (
            lambda: replay_attacks(base, work, a.timeout),
            lambda: link_attacks(base, export, work, a.timeout),
            lambda: hang_attacks(export, work, a.timeout),
        ):
            rows += _table(attacks)
    refused = sum(r.refused for r in rows)
    print(f"\n{refused} of {len(rows)} attacks refused; nothing run or written through a link where refused")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": [asdict(r) for r in rows], "refused": refused, "attacks": len(rows)}, indent=2) + "\n")
    sys.exit(0 if refused == len(rows) else 1)


def _table(attacks: Callable[[], list[Row]]) -> list[Row]:
    rows = attacks()
    print(f"\n| {rows[0].kind} attack | exit | s | refused | evidence |\n|---|---|---|---|---|")
    for r in rows:
        verdict = "yes" if r.refused else "NO"
        print(f"| {r.attack} | {r.exit_code} | {r.seconds:.1f} | {verdict} | {r.evidence[:120]} |", flush=True)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
