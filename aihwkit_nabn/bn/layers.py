"""Finding the BatchNorm layers of a model (all of them, by name, or by a predicate)."""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Tuple, Union

from torch import nn

from ..errors import BatchNormConfigError, NoBatchNormError

#: Every BatchNorm flavour we calibrate: BatchNorm1d/2d/3d, SyncBatchNorm and lazy variants share this base.
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)

LayerSelector = Union[None, Iterable[str], Callable[[str, nn.Module], bool]]


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


def bn_parameter_count(model: nn.Module, layers: LayerSelector = None) -> Tuple[int, int]:
    """Return ``(affine parameters, running-statistic entries)`` of the selected BatchNorm layers."""
    selected = find_bn_layers(model, layers, require_running_stats=False)
    n_affine = sum(p.numel() for m in selected.values() for p in (m.weight, m.bias) if p is not None)
    n_stats = sum(m.running_mean.numel() * 2 for m in selected.values() if m.running_mean is not None)
    return n_affine, n_stats
