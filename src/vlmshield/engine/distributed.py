"""torch.distributed, as vlmshield uses it: torchrun starts the processes, each takes its share.

``torchrun --nproc_per_node N vlmshield eval ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
``init_from_env()`` joins the process group they describe (NCCL on GPUs, gloo on the CPU). Evaluation
gives each process every N-th batch and merges the numbers with ``all_gather``; training averages
gradients across processes. Without torchrun everything runs in one process, unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..core import ParameterError


def init_from_env() -> bool:
    """Join the process group torchrun describes (once); True when running in several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """The GPU of this process (its local rank's under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_device(device=None) -> torch.device:
    """The device ``device`` names (``cpu``, ``cuda``, ``cuda:1``, ``mps``), or this process's default when
    None; ParameterError in one sentence for a name torch does not know or a device this machine lacks."""
    if device is None or device == "":
        return default_device()
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps.") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"device {device!r}: no CUDA GPU is available here; use --device cpu.")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ParameterError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                                 f"numbered from 0.")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device {device!r}: Apple's MPS is not available here; use --device cpu.")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"device {device!r}: vlmshield runs on cpu, cuda or mps.")
    return chosen


def gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in a single process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def is_main_process() -> bool:
    return rank_and_world()[0] == 0
