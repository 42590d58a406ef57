"""aihwkit 1.1's torch-tile weight clipping and remapping after an update, done in place (same numbers).

``TorchInferenceTile.post_update_step`` (called by ``AnalogSGD.step`` after every update) clips the weights
(``weight.data = clamp(weight, -c, c)``), remaps them channel- or layer-wise (``weight.data = scaled / new_scale``),
stores the new scales as the mapping scales (for a vector: a *new* tensor object), resets the learned output
scales to 1 (``as_tensor(1.0).to(device)``: a host-to-device copy) and registers a new weight-gradient hook
``grad / scales ** 2`` over the new scales (``TorchInferenceTile.set_scales``). None of that can be recorded in a CUDA graph:
the graph would keep reading the old storage, and a capture refuses host copies. :func:`install_inplace_post_update`
gives each tile an instance-level ``post_update_step`` doing the same element-wise operations in place
(``clamp_``, ``mul_``, ``amax``, ``div_``, ``copy_``, ``fill_``; one gradient hook whose scales are overwritten):
every value is rounded as in aihwkit's own code,
so the weights and scales are bitwise the same (tested against aihwkit on the CPU). Tiles whose settings it does
not reproduce keep aihwkit's method (the reason is returned). :func:`uninstall_inplace_post_update` undoes it.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from aihwkit.simulator.parameters.enums import WeightClipType, WeightRemapType
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

from .version import aihwkit_supported

__all__ = ["inplace_post_update_reason", "install_inplace_post_update", "uninstall_inplace_post_update"]

def inplace_post_update_reason(tile: nn.Module) -> Optional[str]:
    """None if :func:`install_inplace_post_update` reproduces ``tile.post_update_step`` exactly, else why not."""
    if not aihwkit_supported():
        return "aihwkit outside the supported range"
    if type(tile) is not TorchInferenceTile:  # pylint: disable=unidiomatic-typecheck
        return f"tile class {type(tile).__name__}"
    cfg = tile.rpu_config
    clip = getattr(cfg, "clip", None)
    if clip is not None and clip.type not in (WeightClipType.NONE, WeightClipType.FIXED_VALUE):
        return f"clip type {clip.type.name}"
    remap = getattr(cfg, "remap", None)
    if remap is not None and remap.type != WeightRemapType.NONE:
        if remap.type not in (WeightRemapType.CHANNELWISE_SYMMETRIC, WeightRemapType.LAYERWISE_SYMMETRIC):
            return f"remap type {remap.type.name}"
        if not isinstance(tile.mapping_scales, torch.Tensor):
            return "remapping without mapping scales"
        if getattr(getattr(cfg, "mapping", None), "weight_scaling_lr_compensation", False):
            return "mapping.weight_scaling_lr_compensation (a host read per update)"
        if tile.tile.weight.dim() != 2:
            return "weight not 2-D"
        own = tile._backward_hook_handle
        others = [k for k in (tile.tile.weight._backward_hooks or {}) if own is None or k != own.id]
        if others:  # aihwkit re-registers its hook after each update, i.e. after any other: an order kept only alone
            return "other gradient hooks on the tile weight"
    return None


@torch.no_grad()
def _post_update_inplace(tile: TorchInferenceTile) -> None:
    """TorchInferenceTile.post_update_step of aihwkit 1.1, operation for operation, without new storage."""
    cfg = tile.rpu_config
    weight = tile.tile.weight.data
    clip = getattr(cfg, "clip", None)
    if clip is not None and clip.type == WeightClipType.FIXED_VALUE:
        weight.clamp_(-clip.fixed_value, clip.fixed_value)  # clip_weights: clamp(weight, -c, c)
    remap = getattr(cfg, "remap", None)
    if remap is None or remap.type == WeightRemapType.NONE:
        return
    scales = tile.get_scales()  # mapping scales x learned out scales, as aihwkit computes them
    weight.mul_(scales.view(-1, 1))  # remap_weights: scaled_weights = weight * scales.view(-1, 1)
    if remap.type == WeightRemapType.CHANNELWISE_SYMMETRIC:
        new_scale = weight.abs().amax(1)  # scaled_weights.abs().max(1) (a max: any order, same value)
        weight.div_(new_scale.view(-1, 1))
    else:
        new_scale = weight.abs().amax()
        weight.div_(new_scale)
        new_scale = new_scale.view(-1)
    tile.mapping_scales.copy_(new_scale.flatten())  # set_scales -> set_mapping_scales(new_scale)
    alpha = tile.out_scaling_alpha
    if isinstance(alpha, torch.Tensor):  # set_learned_out_scales(1.0)
        alpha.data.view(-1).fill_(1.0)
    _set_scale_hook(tile, new_scale)


class _ScaleHook:
    """TorchInferenceTile.set_scales' weight-gradient hook ``grad / scales.view(-1, 1) ** 2``, on scales kept in place."""

    def __init__(self, scales: torch.Tensor):
        self.scales = scales
        self.handle = None

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / self.scales.to(grad.device).view(-1, 1) ** 2


def _set_scale_hook(tile: TorchInferenceTile, scales: torch.Tensor) -> None:
    """As set_scales: from now on the weight's gradient is divided by ``scales ** 2`` (one hook, these scales).

    aihwkit removes its hook and registers a new one over the new tensor; here one hook stays registered and its
    scales are overwritten, so that a CUDA graph recorded on them reads the new values."""
    weight = tile.tile.weight
    hook = tile.__dict__.get("_nabn_scale_hook")
    hooks = weight._backward_hooks or {}
    registered = hook is not None and hook.handle is not None and hooks.get(hook.handle.id) is hook
    if registered and hook.scales.shape == scales.shape:
        hook.scales.copy_(scales)
        return
    if tile._backward_hook_handle is not None:
        tile._backward_hook_handle.remove()
        tile._backward_hook_handle = None
    hook = _ScaleHook(scales.detach().clone())
    if weight.requires_grad:
        hook.handle = tile._backward_hook_handle = tile.tile.register_weight_hook(hook)
    tile.__dict__["_nabn_scale_hook"] = hook


class _Bound:
    """The in-place post-update as a per-instance method (deepcopy follows the tile)."""

    def __init__(self, tile: TorchInferenceTile):
        self.tile = tile

    def __call__(self) -> None:
        _post_update_inplace(self.tile)


def install_inplace_post_update(model: nn.Module) -> Dict[str, Optional[str]]:
    """Give every torch inference tile of ``model`` the in-place post-update step where it is exact.

    Returns ``{tile name: None (installed) or the reason it keeps aihwkit's own}``.
    """
    report = {}
    for name, mod in model.named_modules():
        if isinstance(mod, TorchInferenceTile):
            why = inplace_post_update_reason(mod)
            if why is None:
                mod.__dict__["post_update_step"] = _Bound(mod)
            report[name] = why
    return report


def uninstall_inplace_post_update(model: nn.Module) -> None:
    """Give every tile of ``model`` aihwkit's own ``post_update_step`` back."""
    for mod in model.modules():
        if isinstance(mod.__dict__.get("post_update_step"), _Bound):
            del mod.__dict__["post_update_step"]
