"""The aihwkit versions this layer was written and tested against, and the gate that checks them.

The accelerated mirror (:mod:`.mvm`, :mod:`.accelerated`) and the input-range fix reproduce aihwkit 1.1's
torch-tile arithmetic operation for operation; on another aihwkit they would silently simulate something
else, so they check :func:`aihwkit_supported` first and fall back to (or leave) aihwkit's own code.
"""

from __future__ import annotations

import re
from typing import Tuple

import aihwkit

#: Supported aihwkit releases: ``>= 1.1.0, < 1.2`` (the range ``pyproject.toml`` pins).
SUPPORTED_RANGE: Tuple[Tuple[int, int, int], Tuple[int, int, int]] = ((1, 1, 0), (1, 2, 0))


def parse_version(text: str) -> Tuple[int, int, int]:
    """Return ``(major, minor, patch)`` of a version string such as ``"1.1.0"`` or ``"1.1.0.dev3"``."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return (0, 0, 0)
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def aihwkit_supported(version: str = aihwkit.__version__) -> bool:
    """Return whether ``version`` (default: the installed aihwkit) lies in :data:`SUPPORTED_RANGE`."""
    low, high = SUPPORTED_RANGE
    return low <= parse_version(version) < high


def require_supported(what: str) -> None:
    """Raise ``RuntimeError`` naming ``what`` and the installed aihwkit if it is outside the supported range."""
    if not aihwkit_supported():
        raise RuntimeError(
            f"{what} reproduces aihwkit 1.1's torch tile, but aihwkit {aihwkit.__version__} is installed "
            "(supported: >= 1.1.0, < 1.2); check whether this version still needs it"
        )
