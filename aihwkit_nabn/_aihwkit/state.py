"""The exact tensor state of an analog model: tile weights, mapping and learned scales, input ranges.

aihwkit's ``state_dict`` also holds Python objects (``analog_tile_state``), which ``weights_only``
loading refuses; these functions keep only tensors, and put them back so that training continues
exactly as it would have (aihwkit's weight-gradient hook is re-registered on loaded mapping scales).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .tiles import analog_tiles

__all__ = ["analog_state", "load_analog_state", "input_ranges"]


def analog_state(model: nn.Module) -> Dict[str, Tensor]:
    """Return every tensor of ``model.state_dict()`` on the CPU (aihwkit's ``analog_tile_state``
    entries, which hold Python objects, are left out): tile weights, mapping scales, learned output
    scales, input ranges and their init counters, digital biases, BatchNorm state ..."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if isinstance(v, Tensor)}


def load_analog_state(model: nn.Module, state: Dict[str, Tensor], where: str = "analog state") -> None:
    """Copy :func:`analog_state` tensors into a converted model of the same layout, exactly.

    Also re-registers each tile's weight-gradient hook on the loaded mapping scales (aihwkit
    registers it in ``set_scales``; it divides the gradient by the squared scales), so training
    continues exactly as it would have.

    Raises:
        CheckpointError: if keys or shapes differ (e.g. another tile size or rpu_config).
    """
    own = {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, Tensor)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{where} does not match the converted model (another rpu_config / tile layout?): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shapes {shapes[:5]}"
        )
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key])
        for _, tile in analog_tiles(model):
            mapping = tile.get_mapping_scales() if hasattr(tile, "get_mapping_scales") else None
            if mapping is None or not hasattr(tile, "set_scales"):
                continue
            alpha = tile.get_learned_out_scales()
            alpha = None if alpha is None else alpha.detach().clone()
            tile.set_scales(mapping.detach().clone())  # resets the learned scales to 1 ...
            if alpha is not None:
                tile.set_learned_out_scales(alpha)  # ... so put them back


def input_ranges(model: nn.Module) -> Dict[str, float]:
    """Return ``{tile name: input range}`` for every tile with an input range."""
    return {n: float(t.input_range.detach().reshape(-1)[0])
            for n, t in analog_tiles(model) if getattr(t, "input_range", None) is not None}
