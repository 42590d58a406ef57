"""Training under ``torchrun``: DistributedDataParallel with the single-process recipe's global batch.

``torchrun --nproc-per-node N -m aihwkit_nabn train ...`` starts N processes; :func:`init_from_env` joins them
(NCCL on CUDA, one GPU per local rank; gloo on the CPU). Every rank draws the same global batch (the data
streams are seeded alike) and trains on its own contiguous slice of it; DDP averages the gradients, so one step
is the single-process step on the global batch with the same learning rate. BatchNorm is per rank: each rank
normalises its slice with its own batch statistics, and DDP broadcasts rank 0's running statistics (no
SyncBatchNorm, which needs CUDA). Only rank 0 writes logs, resume states and checkpoints; every rank resumes.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError

__all__ = ["init_from_env", "world", "is_main", "shard", "wrap"]


def init_from_env(device: Optional[str] = None) -> Optional[str]:
    """Join the ``torchrun`` process group if ``WORLD_SIZE`` > 1 (once); return the device of this rank
    (``cuda:<LOCAL_RANK>`` on CUDA), else ``device`` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device or "cpu"


def world() -> Tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files (rank 0, or no process group)."""
    return world()[0] == 0


def shard(x: Any, y: Any) -> Tuple[Any, Any]:
    """This rank's contiguous slice of a global batch (tensors, or lists such as a detector's images).

    Raises:
        ConfigError: a global batch that does not split evenly over the ranks (the step would then not
            equal the single-process one).
    """
    rank, size = world()
    if size == 1:
        return x, y
    n = len(x)
    if n % size:
        raise ConfigError(f"a batch of {n} does not split evenly over {size} processes: choose a batch size "
                          f"divisible by the number of processes")
    per = n // size
    return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]


def wrap(model: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` as DistributedDataParallel when a process group exists, else ``model``.

    ``find_unused_parameters``: for models with parameters that a step may not use (aihwkit's analog layers
    hold some, e.g. input-range counters' companions), at the cost of a graph walk per step.
    """
    if world()[1] == 1:
        return model
    ids: Optional[Sequence[int]] = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True,
                                               find_unused_parameters=find_unused_parameters)
