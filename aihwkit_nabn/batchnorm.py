"""Finding BatchNorm layers and saving/restoring their state exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from .errors import BatchNormConfigError, NoBatchNormError

#: Every BatchNorm flavour we calibrate: BatchNorm1d/2d/3d, SyncBatchNorm and lazy variants share this base.
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)

LayerSelector = Union[None, Iterable[str], Callable[[str, nn.Module], bool]]

_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")
_PARAM_NAMES = ("weight", "bias")


def is_batchnorm(module: nn.Module) -> bool:
    """Return whether ``module`` is a BatchNorm layer (1d/2d/3d, SyncBatchNorm)."""
    return isinstance(module, BN_TYPES)


def find_bn_layers(
    model: nn.Module, layers: LayerSelector = None, *, require_running_stats: bool = True
) -> Dict[str, nn.Module]:
    """Return the selected BatchNorm layers of ``model`` as an ordered ``{qualified name: module}`` dict.

    ``layers`` is ``None`` (all BN layers), an iterable of qualified module names, or a predicate
    ``fn(name, module) -> bool``. Raises :class:`NoBatchNormError` if nothing is selected, and
    :class:`BatchNormConfigError` naming the layers built with ``track_running_stats=False``
    (they have no statistics to calibrate) when ``require_running_stats`` is set.
    """
    all_bn = {name: mod for name, mod in model.named_modules() if is_batchnorm(mod)}
    if not all_bn:
        raise NoBatchNormError(
            f"{type(model).__name__} has no BatchNorm layer (BatchNorm1d/2d/3d or SyncBatchNorm): "
            "there are no statistics to calibrate"
        )
    if layers is None:
        selected = all_bn
    elif callable(layers):
        selected = {n: m for n, m in all_bn.items() if layers(n, m)}
    else:
        names = list(layers) if not isinstance(layers, str) else [layers]
        unknown = [n for n in names if n not in all_bn]
        if unknown:
            raise NoBatchNormError(
                f"not BatchNorm layers of this model: {unknown}; its BatchNorm layers are {list(all_bn)}"
            )
        selected = {n: all_bn[n] for n in all_bn if n in set(names)}
    if not selected:
        raise NoBatchNormError(f"the layer selection matched none of the BatchNorm layers {list(all_bn)}")
    if require_running_stats:
        untracked = [n for n, m in selected.items() if not m.track_running_stats or m.running_mean is None]
        if untracked:
            raise BatchNormConfigError(
                f"BatchNorm layers {untracked} have track_running_stats=False: they always normalise with "
                "batch statistics, so there are no running statistics to calibrate; exclude them with `layers=`"
            )
    return selected


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
        for key in _STAT_NAMES + _PARAM_NAMES:
            value = getattr(module, key, None)
            if isinstance(value, torch.Tensor):
                saved[key] = value.detach().clone()
        snap.tensors[name] = saved
        snap.momentum[name] = module.momentum
    return snap


def restore_bn(model: nn.Module, snapshot: BNSnapshot) -> None:
    """Put back exactly the BatchNorm state saved in ``snapshot`` (see :meth:`BNSnapshot.restore`)."""
    snapshot.restore(model)


def bn_parameter_count(model: nn.Module, layers: LayerSelector = None) -> Tuple[int, int]:
    """Return ``(affine parameters, running-statistic entries)`` of the selected BatchNorm layers."""
    selected = find_bn_layers(model, layers, require_running_stats=False)
    n_affine = sum(p.numel() for m in selected.values() for p in (m.weight, m.bias) if p is not None)
    n_stats = sum(m.running_mean.numel() * 2 for m in selected.values() if m.running_mean is not None)
    return n_affine, n_stats
