"""A file lock that lets processes sharing one GPU take turns at a memory-hungry step."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # not on POSIX: no lock, every step runs at once as before
    fcntl = None  # type: ignore[assignment]

__all__ = ["exclusive", "DEPLOY_LOCK_ENV"]

# Names the lock file of the deployment step (aihwkit's input-range calibration caches every layer's inputs: tens of
# GiB for full-size CamVid images); unset, processes deploy side by side.
DEPLOY_LOCK_ENV = "AIHWKIT_NABN_DEPLOY_LOCK"


@contextmanager
def exclusive(path: Optional[Union[str, Path]]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block, waiting for any other
    process holding it; a no-op when ``path`` is None or empty, or the platform has no ``fcntl``."""
    if not path or fcntl is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also after an exception
