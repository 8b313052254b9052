"""``trainer.precision=auto`` (genctl/train/precision.py): bf16 only where the device computes it
natively and the model family gains, decided from the CPU's description at run time."""

from __future__ import annotations

import json

import pytest
import torch

from genctl.models import MODELS
from genctl.train.precision import native_bf16, resolve_precision
from tests.conftest import TINY

CPU = torch.device("cpu")
# torch.cpu.get_capabilities() as two machines of this project describe themselves
ZEN3 = {"cpu_name": "AMD EPYC", "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
ZEN4 = {"cpu_name": "AMD EPYC", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
SAPPHIRE_RAPIDS = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True}


def test_native_bf16_is_read_from_the_cpus_description():
    assert native_bf16(CPU, ZEN3) is None
    assert native_bf16(CPU, ZEN4) == "AVX512_BF16"
    assert native_bf16(CPU, SAPPHIRE_RAPIDS) == "AVX512_BF16"
    assert native_bf16(CPU, {"amx_bf16": True}) == "AMX-BF16"


@pytest.mark.parametrize(
    ("capabilities", "model", "expected"),
    [
        (ZEN4, "pixelcnn", "bf16"),
        (ZEN4, "gated_pixelcnn", "bf16"),
        (ZEN4, "pixelrnn", "bf16"),
        (ZEN4, "vae", "32"),  # the conv VAE measured 0.55x
        (ZEN4, "hvae", "32"),
        (ZEN4, "made", "32"),
        (ZEN3, "pixelcnn", "32"),  # 6-9x slower without native bf16
        (ZEN3, "vae", "32"),
    ],
)
def test_auto_picks_bf16_only_where_the_cpu_has_it_and_the_family_gains(capabilities, model, expected):
    chosen = resolve_precision("auto", CPU, MODELS.get(model).bf16_gains_on, capabilities)
    assert chosen.name == expected
    assert chosen.autocast == (torch.bfloat16 if expected == "bf16" else None)
    assert str(chosen).startswith(f"{expected} (auto: ")


def test_an_explicit_precision_is_kept_whatever_the_machine():
    assert str(resolve_precision("bf16", CPU, (), ZEN3)) == "bf16"
    assert str(resolve_precision(32, CPU, ("cpu",), ZEN4)) == "32"


def test_what_ran_is_in_metrics_json_and_the_log(cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", *TINY, "trainer.max_steps=2", "trainer.precision=auto", f"hydra.run.dir={run}")
    assert code == 0, err
    expected = str(resolve_precision("auto", CPU, MODELS.get("vae").bf16_gains_on))
    assert json.loads((run / "metrics.json").read_text())["precision"] == expected
    assert f"on cpu, precision {expected}:" in (run / "train.log").read_text()
