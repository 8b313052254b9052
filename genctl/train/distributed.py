"""Data-parallel training on PyTorch's own engine: processes started by ``torchrun``, gradients
averaged by ``DistributedDataParallel`` (gloo on CPU, nccl on GPU).

    torchrun --nproc_per_node=2 -m genctl train model=pixelcnn trainer.batch_size=64

``trainer.batch_size`` is the global batch. Every rank draws the same global batch from the same
seeded stream and keeps every world-th image of it (what ``DistributedSampler`` does to a
shuffled index list), so N processes take the very steps one process takes with the same batch,
and a checkpoint resumes with any number of processes. Only rank 0 writes logs, checkpoints and
samples; the others keep their own random streams (posterior noise differs across ranks).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def init() -> None:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shared_stamp() -> str:
    """Rank 0's clock as a run-folder name, the same on every rank (``${now:...}`` would not be)."""
    stamp = [time.strftime("%Y-%m-%d_%H-%M-%S")]
    dist.broadcast_object_list(stamp, src=0)
    return stamp[0]


def max_code(code: int) -> int:
    """The largest of every rank's ``code``: ranks stop together on a flag any of them raised."""
    if not active():
        return code
    t = torch.tensor([code], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def sum_tensors(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sums over ranks of scalar tensors (one collective)."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().double().reshape(()) for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
