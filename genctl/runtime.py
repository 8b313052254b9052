"""Device choice, seeding and the machine's memory, shared by every subcommand."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from genctl.errors import GenctlError

# Seeds of derived random streams are spaced by this prime (a rank's stream in training, a batch's
# in evaluation), so that streams of neighbouring seeds do not overlap.
SEED_STRIDE = 1_000_003

# torch.cpu.get_capabilities()'s names (the CPU flags of /proc/cpuinfo) for native bf16 arithmetic
CPU_BF16 = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX-BF16"}


def describe_cpu() -> str:
    """This CPU as every timing must name it: its model, its bf16 arithmetic and the threads torch
    uses (the same recipe runs up to ~2x faster where bf16 is native)."""
    found = torch.cpu.get_capabilities()
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), found.get("cpu_name", "CPU"))
    bf16 = [label for flag, label in CPU_BF16.items() if found.get(flag)]
    if not bf16:
        bf16 = [
            "AVX-512, no native bf16" if found.get("avx512_f") else "AVX2, no native bf16" if found.get("avx2") else "no AVX2"
        ]
    return f"{model} ({', '.join(bf16)}), {torch.get_num_threads()} threads"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenctlError(f"device={name} was asked for but no CUDA device is available; use device=cpu or auto")
    if not (name == "cpu" or name.startswith("cuda")):
        raise GenctlError(f"device={name} is not one of: auto, cpu, cuda, cuda:N")
    return torch.device(name)


# numpy's generator (np.random.seed, which seed_everything sets) takes seeds in [0, 2**32); torch's
# take 64-bit values, so below this limit the offsets genctl adds to a seed (a rank's stride, a
# batch's index times a stride) stay in torch's range too.
SEED_LIMIT = 2**32


def check_seed(seed: int, name: str = "seed") -> None:
    """A ``ValueError`` for a seed that a generator would refuse only once the work has begun; the
    options that hold a seed check it where they are built (:func:`genctl.config.build` makes it
    one line naming the key)."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name}={seed} is not a seed: use a whole number from 0 to {SEED_LIMIT - 1}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# cgroup v2's limit on this process's memory, where a container sets one ("max" where it does not)
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


def memory_bytes() -> int:
    """The memory this process can have at most: the machine's RAM, or a container's lower limit.

    Sizes that cannot fit in it (``genctl eval``'s samples for FID, a batch a model is asked for)
    are refused before any work, instead of growing until the kernel kills the process."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def readable_bytes(n: float) -> str:
    """``14_300_000_000`` -> ``"14.3 GB"``: a size in a message."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    for unit in units[:-1]:
        if n < 1000:
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:,.3g} EB" if n < 1000 else f"{n:,.0f} EB"


def check_fits(count: int, per_item: int, setting: str, items: str, otherwise: str = "") -> None:
    """Refuse in one line ``setting=count`` when ``count`` items of at least ``per_item`` bytes each
    (``items``: what they are) exceed :func:`memory_bytes`, naming the largest count that fits;
    ``otherwise``: what to change where not even one item fits."""
    available = memory_bytes()
    if count * per_item <= available:
        return
    most = available // per_item
    fix = f"use {setting}={most} or less" if most >= 1 else f"not even one fits; {otherwise}"
    raise GenctlError(
        f"{setting}={count} needs at least {readable_bytes(count * per_item)} of memory for {items} "
        f"({readable_bytes(per_item)} each), more than this machine's {readable_bytes(available)}: {fix}"
    )
