"""torchrun helpers shared by training and scoring: rank, world size, process-group start, barrier, broadcast.

The bottom layer of svlib (it imports only torch), so that :mod:`svlib.scoring` can run under torchrun without
importing :mod:`svlib.training`. A process started by ``torchrun --nproc_per_node N`` has ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in its environment; without torchrun there is one process of rank 0, and every helper here is a
no-op.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["barrier", "broadcast_object", "init_distributed", "local_device", "module_device", "rank_and_world_size"]

TIMEOUT = timedelta(hours=2)
"""How long a rank waits for the others at a barrier before failing (torch's default is 10 min with NCCL): when
ranks split work (e.g. embedding shards), the first done waits for the slowest."""


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from the process group when it is initialised, else from torchrun's
    ``RANK`` / ``WORLD_SIZE`` environment variables (``(0, 1)`` without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` lives: the device of its first parameter, else of its first buffer, else the CPU (an
    exported model run by onnxruntime has no parameters)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def local_device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is available (made the current CUDA device), else
    the CPU."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int]:
    """Start the default process group from torchrun's environment when ``WORLD_SIZE`` > 1 and none is running
    (NCCL when ``device`` is a CUDA device, else gloo; barriers wait up to :data:`TIMEOUT`); returns
    ``(rank, world_size)``.

    The logic of :func:`svlib.training.stage.init_distributed`, without its device choice: pass the device the process
    will use (default: :func:`local_device`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and dist.is_available() and not dist.is_initialized():
        device = torch.device(device) if device is not None else local_device()
        if device.type == "cuda":
            torch.cuda.set_device(device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return rank_and_world_size()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (picklable objects; returns ``obj`` itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
