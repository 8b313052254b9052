"""The training step's precision, and ``trainer.precision=auto``: the machine's fastest path.

bf16 autocast pays only where the processor computes in bf16 natively and the model's layers
gain from it, which differs between machines of one cluster and between model families:
measured with ``scripts/bench_speed.py --parts e`` (training images/s of the benchmark recipes,
bf16 against float32, 2 cores), a CPU with AVX512_BF16 (AMD EPYC Zen 4) ran the PixelCNN 1.81x,
the Gated PixelCNN 1.40x and the Row LSTM 1.72x faster, hvae at 1.02x and the conv VAE at 0.55x;
an AVX2-only EPYC (Zen 3) ran every recipe 6-9x slower; an NVIDIA H200 ran every recipe at
0.72-0.98x (its steps are bound by kernel launches at these batch sizes). So ``auto`` reads the
device's bf16 support at run time and asks the model whether its family gains on that kind of
device (:attr:`genctl.models.base.GenerativeModel.bf16_gains_on`), never one machine's answer
frozen in a recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from genctl.runtime import CPU_BF16

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What the training step runs in: ``32``, ``bf16`` or ``fp16``, and why where genctl chose."""

    name: str
    why: str = ""

    @property
    def autocast(self) -> torch.dtype | None:
        """The forward pass's autocast type; None: float32 throughout."""
        return AUTOCAST.get(self.name)

    def __str__(self) -> str:
        return f"{self.name} ({self.why})" if self.why else self.name


def native_bf16(device: torch.device, capabilities: Mapping[str, Any] | None = None) -> str | None:
    """What makes ``device`` compute bf16 natively (``"AVX512_BF16"``, ``"CUDA"``), None where nothing does.
    ``capabilities``: a CPU's, as ``torch.cpu.get_capabilities()`` describes it (this machine's by default)."""
    if device.type == "cuda":
        return "CUDA" if torch.cuda.is_bf16_supported() else None
    found = torch.cpu.get_capabilities() if capabilities is None else capabilities
    return next((label for flag, label in CPU_BF16.items() if found.get(flag)), None)


def resolve_precision(
    requested: str | int, device: torch.device, gains_on: tuple[str, ...], capabilities: Mapping[str, Any] | None = None
) -> Precision:
    """``trainer.precision`` as it will run: ``32``/``bf16``/``fp16`` as asked; ``auto`` bf16 where
    the device computes bf16 natively and the model family gains on this kind of device, else 32."""
    if str(requested) != "auto":
        return Precision(str(requested))
    native = native_bf16(device, capabilities)
    if native is None:
        return Precision("32", f"auto: this {device.type.upper()} has no native bf16")
    if device.type not in gains_on:
        return Precision("32", f"auto: {native} present, but this model family measured no gain from bf16 on {device.type}")
    return Precision("bf16", f"auto: {native} present, and this model family gains from bf16 on {device.type}")
