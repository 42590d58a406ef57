"""Switching aihwkit's drift compensation off for a block, without touching the programmed chip."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Tuple

import torch
from torch import nn

from .._aihwkit.tiles import inference_tiles


@contextmanager
def without_drift_compensation(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` as if it had no drift compensation: each tile's global factor ``alpha`` is 1.

    aihwkit multiplies every tile output by ``alpha`` (set by ``drift_analog_weights``) in eval mode;
    with ``alpha = 1`` the output is the raw drifted read-out. The alphas are restored on exit.
    """
    saved: List[Tuple[Any, Any]] = []
    try:
        for tile in inference_tiles(model):
            alpha = tile.alpha
            saved.append((tile, alpha))
            tile.alpha = torch.ones_like(alpha) if isinstance(alpha, torch.Tensor) else 1.0
        yield model
    finally:
        for tile, alpha in saved:
            tile.alpha = alpha
