"""Drift times: checking them, reading them from text (``1s``, ``1h``, ``30d``, ``1y``) and labelling them."""

from __future__ import annotations

import math
import re
from typing import Any, List, Tuple

from ..errors import DriftTimeError

#: Default drift times, as in aihwkit's hardware-aware-training tutorial: 1 s, 1 h, 1 d, 30 d, 1 y.
DEFAULT_TIMES: Tuple[float, ...] = (1.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0)

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "y": 365 * 86400.0}


def check_drift_time(t: Any) -> float:
    """Return ``t`` as a float number of seconds; raise :class:`DriftTimeError` if negative, NaN or Inf."""
    try:
        value = float(t)
    except (TypeError, ValueError) as err:
        raise DriftTimeError(f"drift time must be a number of seconds, got {t!r}") from err
    if not math.isfinite(value) or value < 0:
        raise DriftTimeError(f"drift time must be a finite number of seconds >= 0, got {t!r}")
    return value


def parse_time(text: Any) -> float:
    """Return seconds for ``"3600"``, ``"1s"``, ``"1h"``, ``"1d"``, ``"30d"``, ``"1y"``, ``"2.5min"`` (or a number)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return check_drift_time(text)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(s|min|h|d|y)?\s*", str(text))
    if not match:
        raise DriftTimeError(f"cannot read drift time {text!r}: use seconds or a unit, e.g. 1s, 1h, 1d, 30d, 1y")
    try:
        value = float(match.group(1))
    except ValueError:
        raise DriftTimeError(f"cannot read drift time {text!r}: use seconds or a unit, e.g. 1s, 1h, 1d, 30d, 1y") from None
    return check_drift_time(value * _UNITS[match.group(2) or "s"])


def parse_times(text: str) -> List[float]:
    """Return the drift times of a comma-separated list such as ``"1s,1h,1d,30d,1y"`` (at least one)."""
    times = [parse_time(t) for t in str(text).split(",") if t.strip()]
    if not times:
        raise DriftTimeError(f"no drift time in {text!r}: give a comma-separated list such as 1s,1h,1d,30d,1y")
    return times


def time_label(t: float) -> str:
    """Return a short label for a drift time in seconds: ``1s``, ``1h``, ``1d``, ``30d``, ``1y``."""
    for unit, size in (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t >= size and (t / size).is_integer():
            return f"{int(t / size)}{unit}"
    return f"{t:g}s"
