"""Reproducible random streams: a seed derived from a base seed and keys, used in a forked RNG."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch


def derive_seed(seed: int, *keys: Any) -> int:
    """Return a 63-bit seed that depends only on ``seed`` and ``keys`` (stable across processes)."""
    text = repr((int(seed),) + tuple(keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


@contextmanager
def seeded(seed: int, *keys: Any, device: Optional[torch.device] = None) -> Iterator[None]:
    """Run the block with torch's CPU (and ``device``'s CUDA) RNG seeded from ``seed`` and ``keys``.

    The global RNG state is forked, so code outside the block sees the same random stream as if the
    block had not run.
    """
    devices = []
    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index
        devices = [index if index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, *keys))
        yield
