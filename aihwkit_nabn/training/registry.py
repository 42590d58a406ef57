"""The model registry (timm-style): tasks register model builders, with their shipped weights beside them.

``create_model("resnet32")`` builds a fresh model; ``list_models()`` names them; a checkpoint names its
model by ``arch`` and is rebuilt through this registry. Each entry may say how to read its constructor
arguments from a saved state dict (e.g. the number of classes from the classifier's shape), so a
checkpoint needs no pickled objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from torch import nn

from ..utils.registry import Registry

__all__ = ["ModelEntry", "MODELS", "register_model", "create_model", "list_models", "model_entry"]


@dataclass
class ModelEntry:
    """A registered model: its builder, its task, its shipped weights and how to rebuild it from a state dict."""

    name: str
    build: Callable[..., nn.Module]
    task: str = ""
    pretrained: Optional[Path] = None
    kwargs_from_state: Callable[[Mapping[str, Any]], Dict[str, Any]] = field(default=lambda state: {})


#: Every registered model, by canonical name ("resnet20", ...).
MODELS: "Registry[ModelEntry]" = Registry("model")


def register_model(*, task: str = "", pretrained: Optional[Path] = None,
                   kwargs_from_state: Optional[Callable[[Mapping[str, Any]], Dict[str, Any]]] = None
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model builder under its function name (with its task and shipped weights)."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        entry = ModelEntry(fn.__name__, fn, task, pretrained)
        if kwargs_from_state is not None:
            entry.kwargs_from_state = kwargs_from_state
        MODELS.register(fn.__name__, entry)
        return fn

    return register


def model_entry(name: str) -> ModelEntry:
    """Return the registry entry of ``name``; raises ``ConfigError`` (a ``ValueError``) listing the known names."""
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised model by registry name (``kwargs`` go to its builder).

    Raises:
        ConfigError (a ``ValueError``): if ``name`` is not registered (the message lists the known names).
    """
    return MODELS.get(name).build(**kwargs)


def list_models(task: Optional[str] = None) -> List[str]:
    """Return the sorted names accepted by :func:`create_model` (only ``task``'s models if given)."""
    return [n for n in MODELS.names() if task is None or MODELS.get(n).task == task]
