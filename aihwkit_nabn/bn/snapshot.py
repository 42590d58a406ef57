"""Saving and restoring the state of BatchNorm layers exactly: the one undo handle of this package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from ..errors import BatchNormConfigError, NoBatchNormError
from .layers import LayerSelector, find_bn_layers, is_batchnorm

__all__ = ["BNSnapshot", "snapshot_bn", "restore_bn", "STAT_NAMES", "PARAM_NAMES"]

#: The buffers and parameters of a BatchNorm layer a snapshot holds.
STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")
PARAM_NAMES = ("weight", "bias")


@dataclass
class BNSnapshot:
    """An exact copy of the state of some BatchNorm layers (statistics and affine parameters).

    Made by :func:`snapshot_bn` (and returned by ``calibrate_bn``); :meth:`restore` puts every tensor
    back bit for bit, in place, so optimisers and other references to the tensors stay valid.
    """

    tensors: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    momentum: Dict[str, Optional[float]] = field(default_factory=dict)
    #: What the call that made this snapshot did (``calibrate_bn`` records samples, batches, layers).
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def layer_names(self) -> List[str]:
        """Qualified names of the BatchNorm layers held in the snapshot."""
        return list(self.tensors)

    def restore(self, model: nn.Module) -> None:
        """Copy the saved tensors back into the layers of ``model``; raises if the model does not match."""
        modules = dict(model.named_modules())
        missing = [n for n in self.tensors if n not in modules or not is_batchnorm(modules[n])]
        if missing:
            raise NoBatchNormError(f"cannot restore BatchNorm state: the model has no BatchNorm layers {missing}")
        with torch.no_grad():
            for name, saved in self.tensors.items():
                module = modules[name]
                for key, value in saved.items():
                    target = getattr(module, key)
                    if target.shape != value.shape:
                        raise BatchNormConfigError(
                            f"cannot restore {name}.{key}: saved shape {tuple(value.shape)} "
                            f"!= model shape {tuple(target.shape)}"
                        )
                    target.copy_(value)
                module.momentum = self.momentum[name]

    def to_state_dict(self) -> Dict[str, torch.Tensor]:
        """Return the snapshot as a flat ``{"layer.tensor": tensor}`` dict (safe for ``torch.save``)."""
        return {f"{n}.{k}": v for n, d in self.tensors.items() for k, v in d.items()}

    def equals(self, other: "BNSnapshot") -> bool:
        """Return whether both snapshots hold bit-identical tensors for the same layers."""
        if self.tensors.keys() != other.tensors.keys():
            return False
        return all(
            self.tensors[n].keys() == other.tensors[n].keys()
            and all(torch.equal(self.tensors[n][k], other.tensors[n][k]) for k in self.tensors[n])
            for n in self.tensors
        )


def snapshot_bn(model: nn.Module, layers: LayerSelector = None) -> BNSnapshot:
    """Return a :class:`BNSnapshot` of the selected BatchNorm layers' statistics and affine parameters."""
    selected = find_bn_layers(model, layers, require_running_stats=False)
    snap = BNSnapshot()
    for name, module in selected.items():
        saved = {}
        for key in STAT_NAMES + PARAM_NAMES:
            value = getattr(module, key, None)
            if isinstance(value, torch.Tensor):
                saved[key] = value.detach().clone()
        snap.tensors[name] = saved
        snap.momentum[name] = module.momentum
    return snap


def restore_bn(model: nn.Module, snapshot: BNSnapshot) -> None:
    """Put back exactly the BatchNorm state saved in ``snapshot`` (see :meth:`BNSnapshot.restore`)."""
    snapshot.restore(model)
