"""Shared fixtures: the real digits beside the repo, and the CLI run in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genctl.cli.main import main
from genctl.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
# The real data for the tests that need it: a folder holding MNIST/, FashionMNIST/ and mnist-9k1k/ in
# torchvision's layout (.ci/run sets it); those tests skip, saying so, where it is not set.
TEST_DATA_VARIABLE = "GENCTL_TEST_DATA"
TEST_DATA = Path(os.environ[TEST_DATA_VARIABLE]) if os.environ.get(TEST_DATA_VARIABLE) else None


def real_data(sub: str) -> Path:
    """``$GENCTL_TEST_DATA/sub``, or a skip that says what to set."""
    if TEST_DATA is None:
        pytest.skip(f"{TEST_DATA_VARIABLE} is not set: point it at a folder holding {sub} (torchvision's layout)")
    if not (TEST_DATA / sub).is_dir():
        pytest.skip(f"{TEST_DATA_VARIABLE}={TEST_DATA} does not hold {sub}")
    return TEST_DATA


# A run of a second or two (configs/debug/tiny.yaml: one epoch of a tiny MLP model=vae or model=ae).
TINY = ["debug=tiny"]


def one_line_error(code: int, err: str) -> str:
    """The one line a user error prints (exit code 2, no traceback)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """``cli("train", "model=ae", ...)`` -> (exit code, stdout, stderr), run inside pytest."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        argv = sys.argv
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv = argv
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def one_thread():
    """For tests of tiny tensors and many sequential passes (sampling): a second intra-op thread
    only adds hand-off overhead, which on a busy 2-core machine turns seconds into minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    """The embedded digits (dynamic binarization, no validation split): real images for any test."""
    return load_dataset(OmegaConf.create({"name": "digits", "binarize": "dynamic", "val_size": 0, "split_seed": 0}))


@pytest.fixture
def mnist_9k1k() -> Path:
    """The 9,000 / 1,000 re-split of the official test digits (real digits, a small set)."""
    return real_data("mnist-9k1k") / "mnist-9k1k"
