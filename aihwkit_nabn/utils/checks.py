"""Checks of user-given values (command line, config files): each returns the value or raises one clear error."""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

from ..errors import ConfigError

__all__ = ["check_int", "check_float", "check_str", "check_choice", "check_list", "check_unique"]


def _label(name: str) -> str:
    """The value's name to start a message with ('' for a bare value, e.g. a command-line option's)."""
    return f"{name} " if name else ""


def check_int(name: str, value: Any, minimum: Optional[int] = None) -> int:
    """Return ``value`` if it is an integer (not a bool) ``>= minimum``; else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_label(name)}must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{_label(name)}must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value: Any, *, positive: bool = False, minimum: Optional[float] = None) -> float:
    """Return ``value`` as a finite float (``> 0`` if ``positive``, ``>= minimum``); else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{_label(name)}must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{_label(name)}must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{_label(name)}must be >= {minimum}, got {value!r}")
    return float(value)


def check_str(name: str, value: Any) -> str:
    """Return ``value`` if it is a string; else raise :class:`ConfigError`."""
    if not isinstance(value, str):
        raise ConfigError(f"{_label(name)}must be a string, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else raise :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"{_label(name)}must be one of {list(choices)}, got {value!r}")
    return value


def check_list(name: str, value: Any, *, nonempty: bool = True) -> List[Any]:
    """Return ``value`` as a list if it is a list or tuple (non-empty if asked); else raise :class:`ConfigError`."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{_label(name)}must be a list, got {value!r}")
    if nonempty and not value:
        raise ConfigError(f"{_label(name)}must not be empty")
    return list(value)


def check_unique(name: str, values: Sequence[Any]) -> List[Any]:
    """Return ``values`` as a list; raise :class:`ConfigError` naming the repeated ones."""
    values = list(values)
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"{name}: {repeated} given more than once")
    return values
