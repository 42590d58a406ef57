"""Which code produced a result: the commit hash recorded in results files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["code_commit"]


# Paths that hold outputs, not code: a run that writes its results there before asking for the commit
# (as every driver does) must not call its own code dirty.
_OUTPUT_PATHS = ("results", "runs")


def code_commit(root: str | Path | None = None) -> str:
    """Return the commit of the running code: ``$AIHWKIT_NABN_COMMIT`` if set, else ``git rev-parse HEAD``
    of the checkout ``root`` (default: the one holding this package), with ``-dirty`` when a tracked file
    outside ``results/`` and ``runs/`` has uncommitted changes, else ``"unknown"``.

    The environment variable exists for copies of a checkout without ``.git`` (e.g. a lent GPU machine).
    """
    env = os.environ.get("AIHWKIT_NABN_COMMIT")
    if env:
        return env
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    excluded = [f":(exclude){path}" for path in _OUTPUT_PATHS]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head or "unknown"
