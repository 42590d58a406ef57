"""Converting a trained digital model into an (unprogrammed) analog model with aihwkit, and saying what it became."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from aihwkit.nn.conversion import convert_to_analog
from aihwkit.nn.modules.base import AnalogLayerBase
from torch import nn

from .._aihwkit.accelerated import accelerate as accelerate_layers
from .._aihwkit.grouped import GroupedConv2d, grouped_conv_names, split_grouped_convs
from ..errors import ConfigError
from .presets import PCMInferencePreset

__all__ = ["to_analog", "conversion_report", "format_conversion_report", "GROUPED_MODES"]

#: What :func:`to_analog` does with grouped / depthwise convolutions.
GROUPED_MODES = ("analog", "digital")
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear)


def to_analog(
    model: nn.Module,
    rpu_config: Optional[Any] = None,
    *,
    digital_layers: Iterable[str] = (),
    grouped: str = "analog",
    accelerate: bool = True,
) -> nn.Module:
    """Return an analog copy of ``model``: its Conv/Linear layers become aihwkit analog layers.

    Uses aihwkit's ``convert_to_analog`` on a deep copy (the user's model is never modified). aihwkit 1.1's
    analog convolution refuses ``groups > 1``; with ``grouped="analog"`` (default) every grouped or
    depthwise ``nn.Conv2d`` becomes one analog convolution per group, outputs concatenated (same arithmetic;
    :class:`~aihwkit_nabn._aihwkit.grouped.GroupedConv2d`), with ``grouped="digital"`` they stay digital.
    :func:`conversion_report` says which layers are analog.

    Args:
        model: a trained digital model.
        rpu_config: any aihwkit inference rpu_config; default :class:`PCMInferencePreset`.
        digital_layers: qualified names of layers to keep digital (e.g. ``["conv1", "fc"]``; a grouped
            convolution named here stays one digital ``nn.Conv2d``).
        grouped: ``"analog"`` or ``"digital"``, for grouped convolutions not named in ``digital_layers``.
        accelerate: lay the analog work out faster on the device with identical physics
            (see :mod:`aihwkit_nabn._aihwkit.accelerated`).

    Returns:
        The converted model in eval mode, on the device of ``model``.

    Raises:
        ConfigError (a ``ValueError``): a ``digital_layers`` name that is not a module, or an unknown ``grouped``.
    """
    if grouped not in GROUPED_MODES:
        raise ConfigError(f"grouped must be one of {list(GROUPED_MODES)}, got {grouped!r}")
    digital_layers = list(digital_layers)
    names = dict(model.named_modules())
    unknown = [n for n in digital_layers if n not in names]
    if unknown:
        raise ConfigError(f"digital_layers {unknown} are not modules of {type(model).__name__}")
    group_convs = grouped_conv_names(model)
    keep = [n for n in group_convs if grouped == "digital" or n in digital_layers]
    rpu_config = rpu_config if rpu_config is not None else PCMInferencePreset()
    exclude = digital_layers + [n for n in keep if n not in digital_layers]
    if group_convs:
        # a private copy with the grouped convolutions split, converted in place
        analog = convert_to_analog(split_grouped_convs(model, keep=keep), rpu_config, exclude_modules=exclude,
                                   inplace=True)
    else:
        analog = convert_to_analog(model, rpu_config, exclude_modules=exclude, inplace=False)
    analog.eval()
    if accelerate:
        accelerate_layers(analog)
    return analog


def _tile_shape(layer: nn.Module) -> Tuple[Optional[int], Optional[int]]:
    return getattr(layer, "out_features", None), getattr(layer, "in_features", None)


def conversion_report(model: nn.Module) -> Dict[str, Any]:
    """What is analog and what stayed digital in a (converted) model.

    Returns a JSON-serialisable dict::

        {
          "analog":  {name: {"type", "tiles", "out_features", "in_features"}},
          "digital": {name: type name},       # Conv*/Linear layers left digital
          "split":   {original name: {"groups", "analog_groups", "layers": [child names]}},
          "counts":  {"analog_layers", "analog_tiles", "digital_layers",
                      "split_convs", "split_groups", "analog_groups"},
        }

    ``analog`` lists aihwkit analog layers (``AnalogLayerBase`` and not a
    container, i.e. layers owning tiles), including the per-group children of
    split convolutions.  ``digital`` lists every ``_ConvNd``/``nn.Linear``
    (subclasses included) that is not analog, including kept grouped
    convolutions and the children of a ``GroupedConv2d`` that was excluded
    from conversion.  ``split`` maps the name of each ``GroupedConv2d`` (the
    name the grouped convolution had in the original model, provided the
    model was not re-wrapped in between) to its sub-layers.
    """
    analog: Dict[str, Dict[str, Any]] = {}
    digital: Dict[str, str] = {}
    split: Dict[str, Dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, GroupedConv2d):  # may also be an AnalogWrapper subclass (root)
            prefix = f"{name}.convs." if name else "convs."
            split[name] = {
                "groups": m.groups,
                "analog_groups": sum(isinstance(c, AnalogLayerBase) for c in m.convs),
                "layers": [prefix + str(i) for i in range(len(m.convs))],
            }
        if isinstance(m, AnalogLayerBase):
            if not m.IS_CONTAINER:
                out_f, in_f = _tile_shape(m)
                analog[name] = {
                    "type": type(m).__name__,
                    "tiles": sum(1 for _ in m.analog_tiles()),
                    "out_features": out_f,
                    "in_features": in_f,
                }
        elif isinstance(m, _WEIGHT_LAYERS):
            desc = type(m).__name__
            if getattr(m, "groups", 1) > 1:
                desc += f"(groups={m.groups})"
            digital[name] = desc
    counts = {
        "analog_layers": len(analog),
        "analog_tiles": sum(v["tiles"] for v in analog.values()),
        "digital_layers": len(digital),
        "split_convs": len(split),
        "split_groups": sum(v["groups"] for v in split.values()),
        "analog_groups": sum(v["analog_groups"] for v in split.values()),
    }
    return {"analog": analog, "digital": digital, "split": split, "counts": counts}


def format_conversion_report(report: Dict[str, Any], max_lines: int = 50) -> str:
    """Human-readable summary; per-group children are folded into their container."""
    c = report["counts"]
    lines = [
        f"analog layers: {c['analog_layers']} ({c['analog_tiles']} tiles), "
        f"digital Conv/Linear: {c['digital_layers']}, split grouped convs: {c['split_convs']} "
        f"({c['analog_groups']}/{c['split_groups']} groups analog)"
    ]
    folded = {child for v in report["split"].values() for child in v["layers"]}
    rows = []
    for name, v in report["split"].items():
        rows.append(f"  split    {name or '<root>'}: {v['analog_groups']}/{v['groups']} groups analog")
    for name, v in report["analog"].items():
        if name not in folded:
            rows.append(f"  analog   {name or '<root>'}: {v['type']} [{v['out_features']}x{v['in_features']}], {v['tiles']} tile(s)")
    for name, t in report["digital"].items():
        if name not in folded:
            rows.append(f"  digital  {name or '<root>'}: {t}")
    if len(rows) > max_lines:
        rows = rows[:max_lines] + [f"  ... {len(rows) - max_lines} more"]
    return "\n".join(lines + rows)
