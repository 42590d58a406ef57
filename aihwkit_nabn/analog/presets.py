"""Ready aihwkit configurations ("presets") for deploying models on simulated PCM chips."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Dict, Mapping, Optional

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.inference.compensation.base import BaseDriftCompensation
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import MappingParameter


@dataclass
class PCMInferencePreset(TorchInferenceRPUConfig):
    """Default inference configuration of aihwkit-nabn: PCM noise and drift on pure-PyTorch tiles.

    ``TorchInferenceRPUConfig`` (runs on CPU and CUDA with any torch >= 2.9.1) with aihwkit's
    ``PCMLikeNoiseModel`` (programming noise, 1/f read noise and conductance drift fitted on PCM
    devices, g_max = 25 uS), ``GlobalDriftCompensation`` and ``weight_scaling_omega = 1.0`` (weights
    mapped so the largest one uses the full conductance range; without it the output noise swamps
    the signal). Input/output resolution, output noise and bound management are aihwkit's defaults.
    Every field can be overridden as for any aihwkit dataclass config, or with :func:`pcm_inference_config`.
    """

    mapping: MappingParameter = field(default_factory=lambda: MappingParameter(weight_scaling_omega=1.0))
    noise_model: BaseNoiseModel = field(default_factory=lambda: PCMLikeNoiseModel(g_max=25.0))
    drift_compensation: Optional[BaseDriftCompensation] = field(default_factory=GlobalDriftCompensation)


def apply_overrides(rpu_config: Any, overrides: Optional[Mapping[str, Any]] = None) -> Any:
    """Return a deep copy of ``rpu_config`` with dotted-path fields replaced.

    ``{"forward.out_noise": 0.0, "mapping.max_input_size": 256}`` sets
    ``config.forward.out_noise`` and ``config.mapping.max_input_size``. An unknown path raises
    ``AttributeError`` naming the path and the fields available at that level.
    """
    config = copy.deepcopy(rpu_config)
    for path, value in (overrides or {}).items():
        parts = path.replace("__", ".").split(".")
        target = config
        for depth, part in enumerate(parts):
            known = _field_names(target)
            if part not in known:
                prefix = ".".join(parts[:depth]) or type(config).__name__
                raise AttributeError(f"unknown rpu_config field '{path}': {prefix} has fields {sorted(known)}")
            if depth == len(parts) - 1:
                setattr(target, part, value)
            else:
                target = getattr(target, part)
    return config


def _field_names(obj: Any) -> Dict[str, None]:
    """Return the settable field names of a config object (dataclass fields or public attributes)."""
    if is_dataclass(obj):
        return dict.fromkeys(f.name for f in obj.__dataclass_fields__.values())
    return dict.fromkeys(k for k in vars(obj) if not k.startswith("_"))


def pcm_inference_config(overrides: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> PCMInferencePreset:
    """Return a :class:`PCMInferencePreset`, with dotted-path ``overrides`` and/or ``a__b=value`` keywords.

    Example: ``pcm_inference_config({"forward.out_noise": 0.02}, mapping__max_input_size=256)``.
    """
    merged = dict(overrides or {})
    merged.update(kwargs)
    return apply_overrides(PCMInferencePreset(), merged)


def config_fields(config: Any, prefix: str = "") -> Dict[str, Any]:
    """Return ``{dotted path: plain value}`` for every leaf setting of an rpu_config.

    Nested parameter dataclasses and objects (noise model, its conductance converter, drift
    compensation) are walked; enums become ``"Class.NAME"``, classes ``"module.QualName"``.
    Two configurations with equal results simulate the same way; unlike ``repr`` the result holds
    no object addresses, so it can be stored in a checkpoint and compared later.
    """
    if isinstance(config, Enum):
        return {prefix: f"{type(config).__name__}.{config.name}"}
    if isinstance(config, type):
        return {prefix: f"{config.__module__}.{config.__qualname__}"}
    if config is None or isinstance(config, (bool, int, float, str)):
        return {prefix: config}
    if isinstance(config, (list, tuple)):
        return {prefix: [next(iter(config_fields(v).values())) for v in config]}
    out: Dict[str, Any] = {}
    if prefix:  # the object's class is part of the setting (e.g. which noise model)
        out[prefix + ".__class__"] = f"{type(config).__module__}.{type(config).__qualname__}"
    items = ([(f.name, getattr(config, f.name)) for f in fields(config)] if is_dataclass(config)
             else sorted(vars(config).items()) if hasattr(config, "__dict__") else [("", repr(config))])
    for name, value in items:
        out.update(config_fields(value, f"{prefix}.{name}" if prefix else name))
    return out
