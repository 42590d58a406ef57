"""The one place that decides which device work runs on, and how a device is named in results."""

from __future__ import annotations

import platform
from typing import Any, Optional, Union

import torch

DeviceLike = Union[None, str, torch.device]


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` or ``"auto"`` pick CUDA when available, else the CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: Any) -> str:
    """Return a human-readable name of ``device`` for result files (the GPU's name, or the CPU's)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def synchronize(device: Optional[torch.device]) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere. Call before reading a host clock."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def release_cached_memory(device: Optional[torch.device]) -> None:
    """Return the CUDA caching allocator's unused blocks to the device (a no-op elsewhere), so that other processes
    sharing the GPU can use what a finished, memory-hungry step held."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
