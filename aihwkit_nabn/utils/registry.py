"""Name registries (timm-style): models and tasks register under a name; lookups list what is known."""

from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


def canonical(name: str) -> str:
    """Return the registry key of ``name``: lower case, without ``-`` and ``_`` ("ResNet-20" -> "resnet20")."""
    return name.lower().replace("-", "").replace("_", "")


class Registry(Generic[T]):
    """A dict of named entries with clear errors: ``register``, ``get``, ``names``, ``in``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._names: Dict[str, str] = {}  # canonical -> the name as registered

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (looked up canonicalised); re-registering a name replaces the entry."""
        self._entries[canonical(name)] = entry
        self._names[canonical(name)] = name
        return entry

    def unregister(self, name: str) -> None:
        """Remove the entry named ``name`` (no-op if absent)."""
        self._entries.pop(canonical(name), None)
        self._names.pop(canonical(name), None)

    def get(self, name: str) -> T:
        """Return the entry named ``name``; raise :class:`ConfigError` listing the known names."""
        key = canonical(name) if isinstance(name, str) else name
        if key not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return self._entries[key]

    def names(self) -> List[str]:
        """Return the registered names as registered, sorted."""
        return sorted(self._names.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical(name) in self._entries


def decorator(registry: "Registry[Callable]") -> Callable[[Callable], Callable]:
    """Return a decorator that registers a function in ``registry`` under its ``__name__``."""

    def register(fn: Callable) -> Callable:
        registry.register(fn.__name__, fn)
        return fn

    return register
