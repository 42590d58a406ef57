"""Converting a trained digital model into an (unprogrammed) analog model with aihwkit."""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

from aihwkit.nn.conversion import convert_to_analog
from aihwkit.nn.modules.base import AnalogLayerBase
from torch import nn

from .presets import PCMInferencePreset


def to_analog(
    model: nn.Module,
    rpu_config: Optional[Any] = None,
    *,
    digital_layers: Iterable[str] = (),
    accelerate: bool = True,
) -> nn.Module:
    """Return an analog copy of ``model``: its Conv/Linear layers become aihwkit analog layers.

    Uses aihwkit's ``convert_to_analog`` on a deep copy (the user's model is never modified).

    Args:
        model: a trained digital model.
        rpu_config: any aihwkit inference rpu_config; default :class:`PCMInferencePreset`.
        digital_layers: qualified names of Conv/Linear layers to keep digital (e.g. ``["conv1", "fc"]``).
        accelerate: lay the analog work out faster on the device with identical physics
            (see :mod:`aihwkit_nabn.acceleration`).

    Returns:
        The converted model in eval mode, on the device of ``model``.
    """
    digital_layers = list(digital_layers)
    names = dict(model.named_modules())
    unknown = [n for n in digital_layers if n not in names]
    if unknown:
        raise ValueError(f"digital_layers {unknown} are not modules of {type(model).__name__}")
    analog = convert_to_analog(
        model,
        rpu_config if rpu_config is not None else PCMInferencePreset(),
        exclude_modules=digital_layers,
        inplace=False,
    )
    analog.eval()
    if accelerate:
        from .acceleration import accelerate as _accelerate  # pylint: disable=import-outside-toplevel

        _accelerate(analog)
    return analog


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


def has_analog_tiles(model: nn.Module) -> bool:
    """Return whether ``model`` holds at least one aihwkit analog tile."""
    return any(True for root in analog_roots(model) for _ in root.analog_tiles())
