"""genctl export: safetensors weights, config and model card, which genctl.load, eval and sample read without pickle."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

import genctl
from genctl.errors import GenctlError
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.export import export_checkpoint
from genctl.runs.record import RunRecord
from tests import test_api
from tests.conftest import one_line_error

# The runs of test_api (this module trains its own): a VAE with a moving average of its weights, and a MADE.
vae_run, made_run, run = test_api.vae_run, test_api.made_run, test_api.run

FILES = {"model.safetensors", "config.yaml", "card.json", "README.md"}


@pytest.fixture(scope="module")
def vae_export(vae_run, tmp_path_factory) -> Path:
    return export_checkpoint(vae_run, tmp_path_factory.mktemp("vae_export") / "export").folder


def test_an_export_holds_the_evaluated_weights_config_and_card_and_is_smaller(run, cli, one_thread):
    code, out, err = cli("export", f"ckpt={run}")
    assert code == 0, err
    folder = run / "export"
    assert {p.name for p in folder.iterdir()} == FILES
    size, checkpoint_size = sum((folder / name).stat().st_size for name in FILES), (run / "best.pt").stat().st_size
    assert f"{size:,} bytes" in out and f"best.pt {checkpoint_size:,} bytes" in out
    assert size < checkpoint_size / 2  # no optimizer moments, no second copy of the weights, no RNG states

    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: u64 length, then JSON
    about = json.loads(header["__metadata__"]["genctl"])
    assert about["data_shape"] == [1, 28, 28] and about["binary"] is True
    state = load_checkpoint(run / "best.pt")
    averaged = "ema" in state
    expected = state["ema"]["weights"] if averaged else state["model"]  # what genctl eval and sample use
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        assert set(f.keys()) == set(expected)  # the model's weights and buffers, nothing else
        assert all(torch.equal(f.get_tensor(name), expected[name]) for name in expected)
    assert about["source"] == {"checkpoint": "best.pt", "weights": "ema" if averaged else "trained"}
    assert yaml.safe_load((folder / "config.yaml").read_text()) == state["config"]

    card = json.loads((folder / "card.json").read_text())
    nll = RunRecord.read(run).best_nll()
    assert (card["test"]["nll"], card["test"]["nats"], card["test"]["estimator"]) == (nll.name, nll.nats, nll.estimator)
    assert card["params"] == sum(p.numel() for p in genctl.load(run).parameters())
    assert card["protocol"] == RunRecord.read(run).protocol and "root" not in card["dataset"]
    assert ("moving average" in card["weights"]) == averaged
    readme = (folder / "README.md").read_text()
    assert nll.estimator in readme and f"{nll.nats:.2f} nats" in readme and card["protocol"] in readme


PLANTED: list[str] = []


def planted(name: str) -> None:  # what unpickling the planted files would call
    PLANTED.append(name)


class Planted:
    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self):
        return planted, (self.name,)


def test_an_export_loads_without_unpickling_anything_and_matches_its_checkpoint(run, cli, tmp_path, monkeypatch, one_thread):
    folder = tmp_path / "export"
    code, _, err = cli("export", f"ckpt={run}", f"out={folder}")
    assert code == 0, err
    reference = genctl.load(run)
    data = genctl.dataset(run)
    x = data.fixed("test")[:20]
    expected = genctl.nll(reference, x, k=2)
    torch.manual_seed(1)
    expected_images = reference.sample(2)

    for name in ("best.pt", "last.pt", "model.pt", "weights.pkl"):  # would run code if anything unpickled them
        (folder / name).write_bytes(pickle.dumps(Planted(name)))
    calls: list[str] = []

    def refuse(what: str):
        def call(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was called while reading an export")

        return call

    unpicklers = ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"))
    for module, name in unpicklers:
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))

    model = genctl.load(folder)
    assert all(torch.equal(value, reference.state_dict()[name]) for name, value in model.state_dict().items())
    assert genctl.nll(model, x, k=2) == expected
    torch.manual_seed(1)
    assert torch.equal(model.sample(2), expected_images)
    assert genctl.dataset(folder).protocol == data.protocol

    code, _, err = cli("eval", f"ckpt={folder}", "eval.k=3")  # as the run's own test (test_api.train)
    assert code == 0, err
    scored = json.loads((folder / "metrics.json").read_text())["test@model.safetensors"]
    assert scored == json.loads((run / "metrics.json").read_text())["test"]
    code, _, err = cli("sample", f"ckpt={folder}", "n=2", "nrow=2")
    assert code == 0, err
    assert (folder / "samples" / "prior.png").is_file()
    assert calls == [] and PLANTED == []


def test_export_refuses_to_overwrite_or_to_hide_a_run(vae_run, cli, tmp_path):
    folder = tmp_path / "export"
    code, _, err = cli("export", f"ckpt={vae_run}", f"out={folder}")
    assert code == 0, err
    (folder / "metrics.json").write_text("{}")  # an evaluation of the earlier weights
    code, _, err = cli("export", f"ckpt={vae_run}", f"out={folder}")
    assert "already holds an export; pass overwrite=true" in one_line_error(code, err)
    code, _, err = cli("export", f"ckpt={vae_run}", f"out={folder}", "overwrite=true")
    assert code == 0, err
    assert {p.name for p in folder.iterdir()} == FILES

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for args in ([f"out={other}"], [f"out={other}", "overwrite=true"]):
        code, _, err = cli("export", f"ckpt={vae_run}", *args)
        assert "is not empty and holds no export (notes.txt)" in one_line_error(code, err)
    assert (other / "notes.txt").read_text() == "mine"
    code, _, err = cli("export", f"ckpt={vae_run}", f"out={vae_run}", "overwrite=true")
    assert "is the run folder itself" in one_line_error(code, err)
    code, _, err = cli("export", f"ckpt={folder}")
    assert "is an export already" in one_line_error(code, err)
    code, _, err = cli("export")
    assert "ckpt is required" in one_line_error(code, err)


def test_a_checkpoint_without_its_record_exports_with_no_nll_and_an_export_is_not_resumed(vae_export, vae_run, cli, tmp_path):
    code, _, err = cli("train", f"resume={vae_export}")
    assert "is an export (weights and config, no training state): resume the run it came from" in one_line_error(code, err)
    alone = tmp_path / "alone"  # a checkpoint without its run's metrics.json: the card says how to get the NLL
    alone.mkdir()
    shutil.copy(vae_run / "last.pt", alone / "last.pt")
    code, out, err = cli("export", f"ckpt={alone / 'last.pt'}")
    assert code == 0, err
    assert "no test NLL" in out and json.loads((alone / "export" / "card.json").read_text())["test"] is None
    assert "genctl eval ckpt=" in (alone / "export" / "README.md").read_text()


def break_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def foreign_weights(folder: Path) -> None:
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")  # a safetensors file genctl did not write


def edit_config(change: str):
    def edit(folder: Path) -> None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        if change == "no model":
            del config["model"]
        else:
            config["model"]["latent_dim"] = 5
        (folder / "config.yaml").write_text(yaml.safe_dump(config))

    return edit


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "model.safetensors").unlink(), "has no model.safetensors; export the run again"),
        (break_weights, "is corrupt or not a safetensors file"),
        (foreign_weights, "is not a genctl export: its header has no 'genctl' entry"),
        (lambda f: (f / "config.yaml").unlink(), "its config.yaml cannot be read"),
        (lambda f: (f / "config.yaml").write_text("model: [unclosed"), "its config.yaml cannot be read"),
        (lambda f: (f / "config.yaml").write_text("model: !!python/object/apply:os.system [echo]"), "config.yaml cannot be read"),
        (edit_config("no model"), "its config has no model section"),
        (edit_config("latent_dim"), "holds a different model (model=vae)"),
    ],
    ids=["no weights", "truncated", "foreign safetensors", "no config", "bad yaml", "python tag", "no model", "other model"],
)
def test_a_broken_export_is_one_line(vae_export, cli, tmp_path, damage, expected):
    folder = shutil.copytree(vae_export, tmp_path / "export")
    damage(folder)
    for command in ("eval", "sample"):
        code, _, err = cli(command, f"ckpt={folder}")
        assert expected in one_line_error(code, err)
    with pytest.raises(GenctlError, match=re.escape(expected)):
        genctl.load(folder)


def test_a_missing_export_is_one_line(cli, tmp_path):
    code, _, err = cli("eval", f"ckpt={tmp_path / 'nowhere'}")
    assert "does not exist; pass a .pt file, a run folder or an export folder" in one_line_error(code, err)


@contextmanager
def deadline(seconds: int):
    """Fail the test when its body runs longer than ``seconds`` (SIGALRM interrupts pure-Python
    loops and blocking opens alike), instead of letting it hang the suite."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# 1 KB of YAML that safe_load reads in milliseconds as 10**9 shared references to one list
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 10) if previous else ', '.join(['x'] * 10)}]\n"
    for previous, name in zip([None, *"abcdefgh"], "abcdefghi")
)


def alias_bomb(folder: Path) -> None:
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + ALIAS_BOMB)


def linked_to(target: str):
    def link(folder: Path) -> None:
        (folder / "config.yaml").unlink()
        (folder / "config.yaml").symlink_to(target)

    return link


def fifo(folder: Path) -> None:
    (folder / "config.yaml").unlink()
    os.mkfifo(folder / "config.yaml")


def oversize(folder: Path) -> None:
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "#" * (1 << 20) + "\n")


def deep(folder: Path) -> None:
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "deep: " + "[" * 100 + "]" * 100 + "\n")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (alias_bomb, "(it uses the YAML alias *a (line"),
        (linked_to("/dev/zero"), "(it is a device, not a regular file)"),
        (fifo, "(it is a FIFO, not a regular file)"),
        (linked_to("."), "(it is a folder, not a regular file)"),
        (oversize, "(it is larger than 1,048,576 bytes)"),
        (deep, "(its config nests more than 32 levels deep)"),
    ],
    ids=["alias bomb", "dev-zero", "fifo", "folder", "oversize", "deep"],
)
def test_a_hostile_export_config_is_refused_in_seconds_before_omegaconf_sees_it(vae_export, cli, tmp_path, damage, expected):
    folder = shutil.copytree(vae_export, tmp_path / "export")
    damage(folder)
    with deadline(60):  # each call takes well under a second; unguarded, the first never returns
        for command in ("eval", "sample"):
            code, _, err = cli(command, f"ckpt={folder}")
            line = one_line_error(code, err)
            assert f"its config.yaml cannot be read {expected}" in line and "; export the run again" in line
        with pytest.raises(GenctlError, match=re.escape(expected)):
            genctl.load(folder)
    assert not (folder / "metrics.json").exists()


def test_a_checkpoint_whose_pickled_config_shares_references_is_refused_in_seconds(vae_run, tmp_path):
    state = load_checkpoint(vae_run / "last.pt")
    shared: list = ["x"] * 10
    for _ in range(9):  # the pickle form of the alias bomb: each list holds the previous one 10 times
        shared = [shared] * 10
    state["config"]["bomb"] = shared
    torch.save(state, tmp_path / "bomb.pt")
    with deadline(60):
        with pytest.raises(GenctlError, match=re.escape("is not a genctl checkpoint (a part of its config appears twice")):
            genctl.load(tmp_path / "bomb.pt")
        with pytest.raises(GenctlError, match="a part of its config appears twice"):
            genctl.dataset(tmp_path / "bomb.pt")
