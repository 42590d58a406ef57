"""Hardware-aware training (HWA) on aihwkit torch tiles: one import for the preset, training and checkpoints.

* :mod:`aihwkit_nabn.hwa_preset` -- :class:`TorchHWAPreset` (aihwkit's ``StandardHWATrainingPreset``
  on ``TorchInferenceTile``), :func:`hwa_inference_config` and the field table :data:`HWA_PRESET_FIELDS`.
* :mod:`aihwkit_nabn.hwa_training` -- :func:`train_hwa`, :func:`train_hwa_cifar10`,
  :func:`save_hwa_checkpoint`, :func:`load_hwa_model`.
* :mod:`aihwkit_nabn.fixes` -- the input-range gradient fix that :func:`train_hwa` applies.
"""

from .fixes import apply_input_range_fix, input_range_fix_status, input_range_gradient_is_correct
from .hwa_preset import HWA_PRESET_FIELDS, HWA_WEIGHT_NOISE_STD, FieldNote, TorchHWAPreset, hwa_inference_config
from .hwa_training import (
    HWA_FORMAT,
    init_input_ranges,
    input_ranges,
    load_hwa_model,
    save_hwa_checkpoint,
    train_hwa,
    train_hwa_cifar10,
)

__all__ = [
    "TorchHWAPreset",
    "hwa_inference_config",
    "HWA_PRESET_FIELDS",
    "HWA_WEIGHT_NOISE_STD",
    "FieldNote",
    "train_hwa",
    "train_hwa_cifar10",
    "init_input_ranges",
    "input_ranges",
    "save_hwa_checkpoint",
    "load_hwa_model",
    "HWA_FORMAT",
    "apply_input_range_fix",
    "input_range_fix_status",
    "input_range_gradient_is_correct",
]
