"""Named noise settings: aihwkit's device noise models, read noise, converter resolution, output noise and
generic Gaussian weight noise, each applied to an inference configuration.

A setting changes only the noise of a configuration (the noise model, and the forward pass's converter
resolution or output noise); everything else — tile mapping, drift compensation, input ranges — stays the
configuration's own, so methods compared under different settings face the same periphery otherwise.

Two aihwkit 1.1 facts shape the list: the pure-PyTorch tile refuses per-MVM read noise
(``forward.w_noise``) and test-time weight modifiers, so read-noise levels are set through the PCM model's
``read_noise_scale`` (its 1/f read noise, drawn once per drift time); and ``ReRamWan2022NoiseModel`` is
fitted at 1 s, 1 d and 2 d only, so that setting names those times and any other is a clear error.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.inference.noise.custom import StateIndependentNoiseModel
from aihwkit.inference.noise.hermes import HermesNoiseModel
from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel, PCMLikeNoiseModel
from aihwkit.inference.noise.reram import ReRamCMONoiseModel, ReRamWan2022NoiseModel
from torch import Tensor

from ..errors import ConfigError, DriftTimeError
from .times import time_label

__all__ = ["GaussianWeightNoiseModel", "NoiseSetting", "NOISE_SETTINGS", "noise_setting", "list_noise_settings",
           "supported_times", "check_defined_at"]

#: g_max (uS) of every conductance-based setting: the project's PCM preset's.
G_MAX = 25.0


class GaussianWeightNoiseModel(BaseNoiseModel):
    """Generic Gaussian programming noise on the conductances, no drift (the paper's synthetic noise).

    ``mode="additive"``: ``g + N(0, (sigma * g_max)^2)``; ``mode="multiplicative"``: ``g * (1 + N(0, sigma^2))``.
    Conductances are clamped at 0; drift and read noise are absent, so the weights stay as programmed.
    """

    def __init__(self, sigma: float, mode: str = "additive", g_max: float = G_MAX):
        if mode not in ("additive", "multiplicative"):
            raise ValueError(f"mode must be 'additive' or 'multiplicative', got {mode!r}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        super().__init__(SinglePairConductanceConverter(g_max=g_max))
        self.sigma, self.mode, self.g_max = float(sigma), mode, float(g_max)

    def __repr__(self) -> str:
        return f"GaussianWeightNoiseModel(sigma={self.sigma}, mode={self.mode!r}, g_max={self.g_max})"

    __str__ = __repr__

    def apply_programming_noise_to_conductance(self, g_target: Tensor) -> Tensor:
        noise = torch.randn_like(g_target) * self.sigma
        g = g_target + noise * self.g_max if self.mode == "additive" else g_target * (1.0 + noise)
        return g.clamp(min=0.0)

    def generate_drift_coefficients(self, g_target: Tensor) -> Tensor:
        return torch.zeros_like(g_target)

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float) -> Tensor:
        return g_prog


@dataclass(frozen=True)
class NoiseSetting:
    """One named noise setting: what it is (``description``), how it changes a configuration (``change``,
    applied to a copy) and the drift times it is defined at (``times``; None: any)."""

    name: str
    description: str
    change: Callable[[Any], None]
    times: Optional[Tuple[float, ...]] = None

    def apply(self, rpu_config: Any) -> Any:
        """Return a deep copy of ``rpu_config`` with this setting's noise."""
        config = copy.deepcopy(rpu_config)
        self.change(config)
        return config

    def check_times(self, times: Iterable[float]) -> None:
        """Raise :class:`~aihwkit_nabn.errors.DriftTimeError` naming the supported times if any of ``times``
        is not one of them."""
        check_defined_at(f"noise setting {self.name!r}", self.times, times)


def check_defined_at(what: str, supported: Optional[Tuple[float, ...]], times: Iterable[float]) -> None:
    """Raise :class:`~aihwkit_nabn.errors.DriftTimeError` "``what`` is defined at ... only, not at ..." if any of
    ``times`` is not in ``supported`` (None: every time is)."""
    if supported is None:
        return
    bad = [t for t in times if float(t) not in supported]
    if bad:
        raise DriftTimeError(f"{what} is defined at {', '.join(map(time_label, supported))} only, "
                             f"not at {', '.join(map(time_label, bad))}")


def supported_times(noise_model: Any) -> Optional[Tuple[float, ...]]:
    """The drift times an aihwkit noise model is defined at (``ReRamWan2022NoiseModel``'s fitted times), or
    None when it takes any time."""
    if isinstance(noise_model, ReRamWan2022NoiseModel):
        return tuple(sorted(float(t) for t in noise_model.coeff_dic))
    return None


def _model(factory: Callable[[], BaseNoiseModel]) -> Callable[[Any], None]:
    def change(config: Any) -> None:
        config.noise_model = factory()
    return change


def _pcm_read_noise(scale: float) -> Callable[[Any], None]:
    return _model(lambda: PCMLikeNoiseModel(g_max=G_MAX, read_noise_scale=scale))


def _converter_bits(bits: int) -> Callable[[Any], None]:
    def change(config: Any) -> None:
        # aihwkit reads a resolution > 1 as a number of steps: 2^b - 2 over the symmetric range, as its presets
        config.forward.inp_res = float(2 ** bits - 2)
        config.forward.out_res = float(2 ** bits - 2)
    return change


def _out_noise(level: float) -> Callable[[Any], None]:
    def change(config: Any) -> None:
        config.forward.out_noise = level
    return change


#: The custom drift of ``pcm_custom_drift``: stronger drift at low conductance (this project's example
#: dictionary for aihwkit's CustomDriftPCMLikeNoiseModel; g in uS).
CUSTOM_DRIFT = {"g_lst": [0.0, 10.0, 25.0], "nu_mean_lst": [0.08, 0.05, 0.03], "nu_std_lst": [0.03, 0.02, 0.01]}
_WAN_TIMES = supported_times(ReRamWan2022NoiseModel())


def _settings() -> List[NoiseSetting]:
    out = [
        NoiseSetting("pcm", "PCMLikeNoiseModel (g_max 25 uS): programming noise, 1/f read noise, drift (the default)",
                     _model(lambda: PCMLikeNoiseModel(g_max=G_MAX))),
        NoiseSetting("pcm_custom_drift", "CustomDriftPCMLikeNoiseModel: drift exponent 0.08 / 0.05 / 0.03 at "
                                         "0 / 10 / 25 uS (std 0.03 / 0.02 / 0.01)",
                     _model(lambda: CustomDriftPCMLikeNoiseModel(custom_drift_model=copy.deepcopy(CUSTOM_DRIFT),
                                                                 g_max=G_MAX))),
        NoiseSetting("state_independent", "StateIndependentNoiseModel: the same programming noise and drift "
                                          "exponent (0.1 ± 0.05) at every conductance",
                     _model(lambda: StateIndependentNoiseModel(g_max=G_MAX))),
        NoiseSetting("hermes_1dev", "HermesNoiseModel, one PCM device per weight sign (Hermes chip)",
                     _model(lambda: HermesNoiseModel(num_devices=1))),
        NoiseSetting("hermes_2dev", "HermesNoiseModel, two PCM devices per weight sign (Hermes chip)",
                     _model(lambda: HermesNoiseModel(num_devices=2))),
        NoiseSetting("reram_cmo", "ReRamCMONoiseModel: CMO/HfOx ReRAM programming noise, decay and read noise",
                     _model(ReRamCMONoiseModel)),
        NoiseSetting("reram_wan2022", "ReRamWan2022NoiseModel (Wan et al., Nature 2022): fitted at 1 s, 1 d and 2 d "
                                      "only", _model(ReRamWan2022NoiseModel), times=_WAN_TIMES),
    ]
    out += [NoiseSetting(f"read_noise_x{s:g}", f"PCMLikeNoiseModel with read_noise_scale {s:g} (1/f read noise, "
                                               "drawn once per drift time)", _pcm_read_noise(s))
            for s in (0.0, 2.0, 4.0)]
    out += [NoiseSetting(f"converter_{b}bit", f"PCM, {b}-bit input (DAC) and output (ADC) quantisation",
                         _converter_bits(b)) for b in (4, 6, 8)]
    out += [NoiseSetting(f"out_noise_{v:g}", f"PCM, output noise {v:g} (of the output bound)", _out_noise(v))
            for v in (0.0, 0.02, 0.08)]
    out += [NoiseSetting(f"gauss_{mode[:3]}_{s:g}", f"Gaussian {mode} programming noise, sigma {s:g}"
                                                    + (" x g_max" if mode == "additive" else "") + ", no drift",
                         _model(lambda s=s, mode=mode: GaussianWeightNoiseModel(s, mode)))
            for mode, sigmas in (("additive", (0.02, 0.05)), ("multiplicative", (0.05, 0.1))) for s in sigmas]
    return out


#: Every named setting, in table order.
NOISE_SETTINGS: Dict[str, NoiseSetting] = {s.name: s for s in _settings()}


def list_noise_settings() -> List[str]:
    """Return the names of the noise settings, in table order."""
    return list(NOISE_SETTINGS)


def noise_setting(name: str) -> NoiseSetting:
    """Return the setting called ``name``.

    Raises:
        ConfigError: an unknown name (the known ones are listed).
    """
    if name not in NOISE_SETTINGS:
        raise ConfigError(f"unknown noise setting {name!r}; known: {', '.join(NOISE_SETTINGS)}")
    return NOISE_SETTINGS[name]
