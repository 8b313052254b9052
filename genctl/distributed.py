"""Data-parallel training on PyTorch's own engine: processes started by ``torchrun``, gradients
averaged by ``DistributedDataParallel`` (gloo on CPU, nccl on GPU).

    torchrun --nproc_per_node=2 -m genctl train model=pixelcnn trainer.batch_size=64

``trainer.batch_size`` is the global batch. Every rank draws the same global batch from the same
seeded stream and keeps every world-th image of it (what ``DistributedSampler`` does to a
shuffled index list), so N processes take the very steps one process takes with the same batch,
and a checkpoint resumes with any number of processes. Only rank 0 writes logs, checkpoints and
samples; the others keep their own random streams (posterior noise differs across ranks).

Restarts: ``torchrun --max-restarts=N`` starts every process again when one fails (a process that
loses its peers says so in one line). The processes of each attempt meet under their own key
prefix in torchrun's key-value store, rank 0 of the first attempt records the run folder there,
and a restarted attempt continues that folder from its ``last.pt`` (:meth:`genctl.runs.folder.RunFolder.restart_checkpoint`),
as does a sweep job that SLURM requeues (``hydra/launcher=slurm``: submitit runs the job again).
On several nodes torchrun's restart counts can differ between nodes: launch with
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per attempt) and ``hydra.run.dir``.
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import torch
import torch.distributed as dist

from genctl.errors import GenctlError

# Every process of one attempt is started at the same moment and does the same work before it
# meets the others (imports, composing the config): this bounds a meeting that cannot happen.
MEET_TIMEOUT = timedelta(minutes=2)

# How long a process that is done waits for the others before it leaves (rank 0 may still be
# testing best.pt, which can take long): a peer that dies is noticed by torchrun, not by this wait.
LEAVE_TIMEOUT = timedelta(hours=24)

# torchrun's store for the whole launch, kept across restarts (None where each attempt has its own).
_launch_store: dist.Store | None = None
# Where this attempt's processes met (None outside torchrun): they leave through it too.
_attempt_store: dist.Store | None = None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def restart_count() -> int:
    """How often this process's job was started again: torchrun's restarts of the workers, or SLURM's
    requeues of the job (after preemption or a time limit, as submitit requeues it)."""
    return max(int(os.environ.get(name) or 0) for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"))


def _first_line(e: BaseException) -> str:
    """The first sentence of torch's or gloo's message, without the C++ source location it starts with."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0]


def init() -> None:
    """Join the process group torchrun describes in the environment (no-op for one process).

    torchrun's agent keeps one key-value store for the whole launch and hands it to every restart
    of the workers (``TORCHELASTIC_USE_AGENT_STORE``) without a namespace per restart, so restarted
    processes would read the addresses their dead predecessors published and fail to connect, or
    wait on them (pytorch/pytorch#135712, #167288). Each attempt therefore meets under its own
    prefix, and first in the store, which bounds the wait with :data:`MEET_TIMEOUT`.
    """
    global _launch_store, _attempt_store
    if world_size() == 1 or dist.is_initialized():
        return
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    try:
        store, rank_, world = next(dist.rendezvous("env://", timeout=MEET_TIMEOUT))
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            _launch_store, store = store, dist.PrefixStore(f"genctl/attempt_{attempt}", store)
        store.set(f"arrived/{rank_}", "1")
        store.wait([f"arrived/{r}" for r in range(world)], MEET_TIMEOUT)
        _attempt_store = store
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=store, rank=rank_, world_size=world)
    except (RuntimeError, ValueError) as e:  # torch's DistError types are RuntimeErrors
        raise GenctlError(
            f"process {rank()} of {world_size()} (attempt {attempt + 1}) did not meet the others within "
            f"{MEET_TIMEOUT.seconds}s: {_first_line(e)}; on several nodes, a restarted launch needs "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment"
        ) from e


def local_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun on GPUs each rank takes its own (LOCAL_RANK), not
    ``cuda`` (the first GPU) for all."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launch_run_dir(new: str) -> str:
    """The run folder of this torchrun launch, the same on every rank: rank 0's ``new`` in the first
    attempt, and the first attempt's folder in the attempts torchrun restarts (its store remembers)."""
    if rank() == 0 and _launch_store is not None:
        new = _launch_store.compare_set("genctl/run_dir", "", new).decode()
    box = [new]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def new_run_name() -> str:
    """A new run folder's name as ``hydra.run.dir`` makes one (time to the microsecond, a random
    suffix), from this process's clock."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}-{secrets.token_hex(2)}"


def largest_on_any_rank(code: int) -> int:
    """The largest of every rank's ``code``: ranks stop together on a flag any of them raised."""
    if not active():
        return code
    t = torch.tensor([code], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def any_flags(flags: list[bool]) -> list[bool]:
    """Per position, whether any rank's flag is set (one collective): ranks act together on a
    condition only some of them see, such as a cadence in seconds on their own clocks."""
    if not active():
        return flags
    t = torch.tensor(flags, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t]


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


@contextmanager
def lost_peers_in_one_line() -> Iterator[None]:
    """A collective that fails because another process died or stalled, as one line (that process's
    own error is in torchrun's log): a dead peer closes its connections, so the others' next
    collective fails at once; torchrun then stops them all, and with ``--max-restarts`` starts
    them again to continue from the run's last.pt."""
    try:
        yield
    except RuntimeError as e:  # torch's DistError types are RuntimeErrors; gloo raises plain ones naming its transport
        if not active() or not (isinstance(e, dist.DistError) or "/gloo/" in str(e)):
            raise
        raise GenctlError(
            f"process {rank()} of {world_size()} lost the others ({_first_line(e)}): another process stopped first "
            "(torchrun's log says which); under torchrun --max-restarts=N all restart and continue from the run's last.pt"
        ) from e


def finish(completed: bool) -> None:
    """Leave the process group, all processes together where this one ``completed`` its work.

    A process that leaves while a peer is still connected (rank 0 writing its report) can abort at
    interpreter exit: the group's gloo threads outlive ``destroy_process_group`` while
    DistributedDataParallel holds the group, and tearing them down with a live connection ends in
    ``terminate called without an active exception`` (SIGABRT), after which torchrun stops rank 0
    before it has written metrics.json. So every process says it is done, one that completed waits
    until all have (a failed one leaves at once: its peers must not wait for a report that will not
    come), and the group is released before the interpreter's exit. A failed one does nothing slow
    on its way out: torchrun stops the others as soon as one process fails, and the failure's one
    line must be printed before that happens to it too.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if _attempt_store is not None:
        _attempt_store.set(f"left/{rank()}", "1")
        if completed:
            _attempt_store.wait([f"left/{r}" for r in range(world_size())], LEAVE_TIMEOUT)
    dist.destroy_process_group()
    if completed:
        gc.collect()  # the DDP reducer's hold on the group goes now, with its gloo threads
