"""Switching aihwkit's drift compensation off for a block, without touching the programmed chip."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
from aihwkit.simulator.tiles.inference import InferenceTileWithPeriphery
from torch import nn


def inference_tiles(model: nn.Module) -> List[InferenceTileWithPeriphery]:
    """Return every aihwkit inference tile (torch or C++ based) inside ``model``."""
    return [m for m in model.modules() if isinstance(m, InferenceTileWithPeriphery)]


@contextmanager
def without_drift_compensation(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` as if it had no drift compensation: each tile's global factor ``alpha`` is 1.

    aihwkit multiplies every tile output by ``alpha`` (set by ``drift_analog_weights``) in eval mode;
    with ``alpha = 1`` the output is the raw drifted read-out. The alphas are restored on exit.
    """
    saved: List[Tuple[InferenceTileWithPeriphery, torch.Tensor]] = []
    try:
        for tile in inference_tiles(model):
            alpha = tile.alpha
            saved.append((tile, alpha))
            tile.alpha = torch.ones_like(alpha) if isinstance(alpha, torch.Tensor) else 1.0
        yield model
    finally:
        for tile, alpha in saved:
            tile.alpha = alpha
