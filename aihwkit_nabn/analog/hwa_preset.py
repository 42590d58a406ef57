"""aihwkit's ``StandardHWATrainingPreset`` on pure-PyTorch tiles, with a table of what is copied.

aihwkit's ``StandardHWATrainingPreset`` (Rasch et al., arXiv:2302.08469) is an ``InferenceRPUConfig``:
its C++ RPUCuda tiles do not run on the GPU with the PyPI wheel nor with torch 2.14.
:class:`TorchHWAPreset` puts every setting of it that ``TorchInferenceTile`` supports on a
``TorchInferenceRPUConfig``. :data:`HWA_PRESET_FIELDS` documents, field by field, what is copied,
what cannot be copied and why (each "not supported" claim is the torch tile's own check:
``AnalogMVM.check_support`` / ``TorchSimulatorTile.check_rpu_config_support``), and what replaces
it; ``tests/test_hwa.py`` verifies the table against both configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Tuple

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.inference.compensation.base import BaseDriftCompensation
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import (
    InputRangeParameter,
    IOParameters,
    MappingParameter,
    PrePostProcessingParameter,
    WeightClipParameter,
    WeightModifierParameter,
    WeightRemapParameter,
)
from aihwkit.simulator.parameters.enums import (
    BoundManagementType,
    NoiseManagementType,
    WeightClipType,
    WeightModifierType,
    WeightRemapType,
)
from aihwkit.simulator.presets.utils import PresetIOParameters

from .presets import apply_overrides

__all__ = [
    "TorchHWAPreset",
    "hwa_inference_config",
    "HWA_PRESET_FIELDS",
    "HWA_WEIGHT_NOISE_STD",
    "FieldNote",
    "COPIED",
    "NOT_SUPPORTED",
    "REPLACED",
    "TILE_CLASS",
]

HWA_WEIGHT_NOISE_STD = 0.05
"""Std of the additive Gaussian training weight noise, relative to the tile's max |weight|.

Why 0.05: the deployment noise model (``PCMLikeNoiseModel``, g_max = 25 uS, single device pair)
programs a weight of magnitude |w| = 0.5 / 0.75 / 1.0 w_max with a std of 4.0 / 4.4 / 4.4 % of
w_max (its polynomial ``prog_coeff``, both devices of the pair); the preset's training read noise
it replaces (``forward.w_noise`` = 0.0175, PCM_READ) adds in quadrature: sqrt(0.044^2 + 0.0175^2)
= 0.047, rounded up to 0.05. The 1/f read noise and drift variability that accumulate after
programming (about 3.7 % of g at g_max one second after programming, 5 % after a year) are left
to drift compensation and BN calibration: more training noise costs clean accuracy.
"""

COPIED = "copied"
NOT_SUPPORTED = "not supported by the torch tile"
REPLACED = "replaced"
TILE_CLASS = "tile class"


class FieldNote(NamedTuple):
    """One row of :data:`HWA_PRESET_FIELDS`: a dotted rpu_config field, its status and why."""

    path: str
    status: str
    note: str


_IR = "pre_post.input_range."
HWA_PRESET_FIELDS: Tuple[FieldNote, ...] = (
    # -- tile class
    FieldNote("tile_class", TILE_CLASS, "InferenceTile (C++ RPUCuda) -> TorchInferenceTile (pure PyTorch, CPU/CUDA)"),
    FieldNote("simulator_tile_class", TILE_CLASS, "(absent on the C++ preset) -> TorchSimulatorTile"),
    # -- mapping: all supported
    FieldNote("mapping.weight_scaling_omega", COPIED, "1.0: largest weight of a column uses the full range"),
    FieldNote("mapping.weight_scaling_columnwise", COPIED, "True: one mapping scale per output column"),
    FieldNote("mapping.max_input_size", COPIED, "512 rows per tile (larger layers become tile arrays)"),
    FieldNote("mapping.max_output_size", COPIED, "0: no split along outputs"),
    FieldNote("mapping.digital_bias", COPIED, "True: bias added in digital"),
    FieldNote("mapping.learn_out_scaling", COPIED, "True: learned digital output scales"),
    FieldNote("mapping.out_scaling_columnwise", COPIED, "True: one learned scale per column"),
    # -- forward IO: all supported except read noise and IR drop
    FieldNote("forward.is_perfect", COPIED, "False: non-ideal analog MVM"),
    FieldNote("forward.mv_type", COPIED, "ONE_PASS (the only type the torch tile supports)"),
    FieldNote("forward.inp_res", COPIED, "254 levels: 8-bit DAC"),
    FieldNote("forward.inp_bound", COPIED, "1.0"),
    FieldNote("forward.inp_sto_round", COPIED, "False"),
    FieldNote("forward.inp_noise", COPIED, "0.0"),
    FieldNote("forward.out_res", COPIED, "254 levels: 8-bit ADC"),
    FieldNote("forward.out_bound", COPIED, "10.0"),
    FieldNote("forward.out_noise", COPIED, "0.04 additive Gaussian output noise"),
    FieldNote("forward.out_noise_std", COPIED, "0.0: same output noise std on every column"),
    FieldNote("forward.bound_management", COPIED, "NONE"),
    FieldNote("forward.noise_management", COPIED, "CONSTANT"),
    FieldNote("forward.nm_thres", COPIED, "1.0 (constant input scale; the input range does the scaling)"),
    FieldNote("forward.w_noise", NOT_SUPPORTED,
              "0.0175 PCM read noise per MVM: AnalogMVM.check_support raises 'forward.w_noise not supported "
              "in torch tile'; replaced by the training weight modifier (modifier.*)"),
    FieldNote("forward.w_noise_type", NOT_SUPPORTED,
              "PCM_READ: same check (any type but NONE is refused); see modifier.type"),
    FieldNote("forward.ir_drop", NOT_SUPPORTED,
              "1.0: AnalogMVM.check_support raises 'IR drop not supported in torch tile'. "
              "TorchInferenceRPUConfigIRDropT models another (time-dependent) IR drop and is not accelerated; "
              "kept at 0"),
    # -- weight remapping and clipping after every update
    FieldNote("remap.type", COPIED, "CHANNELWISE_SYMMETRIC (supported by TorchSimulatorTile.remap_weights)"),
    FieldNote("remap.remapped_wmax", COPIED, "1.0 (the only value the torch tile accepts)"),
    FieldNote("remap.max_scale_range", COPIED, "0.0 (required by the torch tile)"),
    FieldNote("remap.max_scale_ref", COPIED, "0.0 (required by the torch tile)"),
    FieldNote("clip.type", COPIED, "FIXED_VALUE"),
    FieldNote("clip.fixed_value", COPIED, "1.0"),
    # -- inference noise and drift compensation (used when programming / drifting)
    FieldNote("noise_model", COPIED, "PCMLikeNoiseModel() with aihwkit's defaults (g_max = 25 uS)"),
    FieldNote("drift_compensation", COPIED, "GlobalDriftCompensation()"),
    # -- learned input ranges
    FieldNote(_IR + "enable", COPIED, "True"),
    FieldNote(_IR + "learn_input_range", COPIED, "True (see aihwkit_nabn._aihwkit.input_range_fix for torch >= 2.14)"),
    FieldNote(_IR + "init_value", COPIED, "3.0"),
    FieldNote(_IR + "init_from_data", COPIED, "100 batches"),
    FieldNote(_IR + "init_std_alpha", COPIED, "3.0 standard deviations"),
    FieldNote(_IR + "decay", COPIED, "0.001"),
    FieldNote(_IR + "input_min_percentage", COPIED, "0.95"),
    FieldNote(_IR + "output_min_percentage", COPIED, "0.95"),
    FieldNote(_IR + "manage_output_clipping", COPIED, "False (True is not implemented by the torch tile)"),
    FieldNote(_IR + "gradient_scale", COPIED, "1.0"),
    FieldNote(_IR + "gradient_relative", COPIED, "True"),
    # -- training weight noise: replaces forward.w_noise
    FieldNote("modifier.type", REPLACED,
              "NONE -> ADD_NORMAL: additive Gaussian weight noise, a fresh draw per mini-batch, in training "
              "only (the torch tile refuses enable_during_test)"),
    FieldNote("modifier.std_dev", REPLACED,
              f"0.0 -> {HWA_WEIGHT_NOISE_STD} of the tile's max |weight| (see HWA_WEIGHT_NOISE_STD for why)"),
    FieldNote("modifier.rel_to_actual_wmax", COPIED, "True: noise relative to the actual max |weight|"),
    FieldNote("modifier.per_batch_sample", COPIED, "False: one noise draw per mini-batch"),
    FieldNote("modifier.enable_during_test", COPIED, "False"),
    # -- fixed by InferenceRPUConfig
    FieldNote("backward.is_perfect", COPIED, "True: ideal backward pass (hardware-aware training)"),
    FieldNote("update.pulse_type", COPIED, "NONE: floating-point SGD update"),
)
"""Field-by-field account of :class:`TorchHWAPreset` vs aihwkit's ``StandardHWATrainingPreset``.

Every field not listed has the same (default) value in both; ``tests/test_hwa.py`` checks that,
that every COPIED field is equal, and that every NOT_SUPPORTED field is refused by the torch tile.
"""


@dataclass
class TorchHWAPreset(TorchInferenceRPUConfig):
    """aihwkit's ``StandardHWATrainingPreset`` on ``TorchInferenceTile`` (CPU and CUDA, any torch).

    Copies every setting the torch tile supports (see :data:`HWA_PRESET_FIELDS`): column-wise weight
    scaling (omega = 1) on tiles of at most 512 inputs, digital bias and learned column-wise output
    scales; 8-bit DAC/ADC, output noise 0.04, output bound 10, constant noise management, no bound
    management; learned input ranges initialised from data; channel-wise weight remapping and
    clipping to 1 after each update; ``PCMLikeNoiseModel`` and ``GlobalDriftCompensation`` for
    programming and drift. The per-MVM PCM read noise and IR drop, which the torch tile cannot
    simulate, are replaced by additive Gaussian weight noise during training
    (:data:`HWA_WEIGHT_NOISE_STD`).

    Use it with the fix of :mod:`aihwkit_nabn._aihwkit.input_range_fix` on torch >= 2.14 (``train_hwa`` applies it).
    """

    mapping: MappingParameter = field(
        default_factory=lambda: MappingParameter(
            weight_scaling_omega=1.0,
            weight_scaling_columnwise=True,
            max_input_size=512,
            max_output_size=0,
            digital_bias=True,
            learn_out_scaling=True,
            out_scaling_columnwise=True,
        )
    )
    forward: IOParameters = field(
        default_factory=lambda: PresetIOParameters(
            inp_res=254.0,
            out_res=254.0,
            bound_management=BoundManagementType.NONE,
            noise_management=NoiseManagementType.CONSTANT,
            nm_thres=1.0,
            out_noise=0.04,
            out_bound=10.0,
            # not supported by the torch tile (see HWA_PRESET_FIELDS): w_noise, w_noise_type, ir_drop
        )
    )
    remap: WeightRemapParameter = field(
        default_factory=lambda: WeightRemapParameter(remapped_wmax=1.0, type=WeightRemapType.CHANNELWISE_SYMMETRIC)
    )
    noise_model: BaseNoiseModel = field(default_factory=PCMLikeNoiseModel)
    drift_compensation: Optional[BaseDriftCompensation] = field(default_factory=GlobalDriftCompensation)
    pre_post: PrePostProcessingParameter = field(
        default_factory=lambda: PrePostProcessingParameter(
            input_range=InputRangeParameter(
                enable=True,
                init_value=3.0,
                init_from_data=100,
                init_std_alpha=3.0,
                decay=0.001,
                input_min_percentage=0.95,
                output_min_percentage=0.95,
                manage_output_clipping=False,
                gradient_scale=1.0,
                gradient_relative=True,
            )
        )
    )
    clip: WeightClipParameter = field(
        default_factory=lambda: WeightClipParameter(type=WeightClipType.FIXED_VALUE, fixed_value=1.0)
    )
    modifier: WeightModifierParameter = field(
        default_factory=lambda: WeightModifierParameter(
            type=WeightModifierType.ADD_NORMAL, std_dev=HWA_WEIGHT_NOISE_STD, rel_to_actual_wmax=True
        )
    )


def hwa_inference_config(**overrides: Any) -> TorchHWAPreset:
    """Return the configuration to deploy an HWA-trained model with: a :class:`TorchHWAPreset`.

    The training configuration is also the right inference one, so no separate preset is needed:
    the weight modifier acts only in training mode (the torch tile refuses ``enable_during_test``),
    input ranges are updated from data only in training mode and are otherwise the learned ones,
    and the noise model / drift compensation act only when weights are programmed and drifted.
    Keeping the same object keeps the tile layout, input quantisation and noise management the
    model was trained for. ``overrides`` are dotted-path fields as for
    :func:`~aihwkit_nabn.analog.presets.apply_overrides`, given as ``a__b=value`` keywords.
    """
    return apply_overrides(TorchHWAPreset(), overrides)
