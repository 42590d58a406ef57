"""The one walker over aihwkit's analog layers and tiles inside any ``nn.Module``."""

from __future__ import annotations

from typing import List, Tuple

from torch import nn

from aihwkit.nn.modules.base import AnalogLayerBase
from aihwkit.simulator.tiles.inference import InferenceTileWithPeriphery
from aihwkit.simulator.tiles.module import TileModule

__all__ = ["analog_roots", "analog_layers", "analog_tiles", "inference_tiles", "has_analog_tiles", "is_analog_layer"]


def is_analog_layer(module: nn.Module) -> bool:
    """Return whether ``module`` is an analog layer owning tiles (not an analog container or wrapper)."""
    return isinstance(module, AnalogLayerBase) and "analog_module" in module._modules


def analog_roots(model: nn.Module) -> List[AnalogLayerBase]:
    """Return the outermost aihwkit analog modules of ``model`` (the model itself if it is one).

    aihwkit's ``program_analog_weights``/``drift_analog_weights`` act on all tiles below the module
    they are called on, so calling them on these roots reaches every tile exactly once.
    """
    if isinstance(model, AnalogLayerBase):
        return [model]
    roots: List[AnalogLayerBase] = []
    for child in model.children():
        roots.extend(analog_roots(child))
    return roots


def analog_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Return ``(qualified name, layer)`` for every analog layer that owns tiles (AnalogConv2d, AnalogLinear, ...)."""
    return [(n, m) for n, m in model.named_modules() if is_analog_layer(m)]


def analog_tiles(model: nn.Module) -> List[Tuple[str, TileModule]]:
    """Return ``(qualified name, tile)`` for every aihwkit tile module of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TileModule)]


def inference_tiles(model: nn.Module) -> List[InferenceTileWithPeriphery]:
    """Return every aihwkit inference tile (torch or C++ based) inside ``model``."""
    return [m for m in model.modules() if isinstance(m, InferenceTileWithPeriphery)]


def has_analog_tiles(model: nn.Module) -> bool:
    """Return whether ``model`` holds at least one aihwkit analog tile (as aihwkit's ``analog_tiles()`` sees them)."""
    return any(True for root in analog_roots(model) for _ in root.analog_tiles())
