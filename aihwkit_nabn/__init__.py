"""aihwkit-nabn: noise-aware BatchNorm calibration for analog (PCM) inference with IBM aihwkit.

Table of contents (floors from the bottom; each imports only from floors below it -- ARCHITECTURE.md)
------------------------------------------------------------------------------------------------------
BatchNorm layers of any model (``bn/``)
    calibrate_bn, noise_aware_bn                                -- re-estimate BN statistics on the chip
    snapshot_bn, restore_bn, BNSnapshot, find_bn_layers         -- exact undo
    finetune_bn, finetuned_bn                                   -- BN-only fine-tuning (Bhattacharjee et al. 2023)
    freeze_all_but_bn, bn_parameters, bn_optimizer, FrozenModel -- the same in your own training loop
    TensorBatches                                               -- in-memory batches for all of the above
Deployment on simulated chips (``analog/``)
    PCMInferencePreset, pcm_inference_config, apply_overrides   -- inference rpu_configs
    TorchHWAPreset, hwa_inference_config, HWA_PRESET_FIELDS     -- StandardHWATrainingPreset for torch tiles
    to_analog, conversion_report, format_conversion_report      -- convert a trained model (deep copy), what became analog
    Chip, make_chips                                            -- programmed chips, drifted to time t
    check_drift_time, parse_time, time_label, DEFAULT_TIMES     -- drift times
    without_drift_compensation                                  -- raw drifted read-out, for comparison
    noise_setting, list_noise_settings, GaussianWeightNoiseModel -- named noise settings from aihwkit's models
aihwkit internals, version-gated (``_aihwkit/``)
    accelerate, restore_stock, is_accelerated, acceleration_report -- same physics, faster layout
    fused_report, set_fused, fused_enabled                      -- the fused CUDA kernels of accelerated layers
    input_range_fix, apply_input_range_fix, remove_input_range_fix, input_range_fix_status,
    input_range_gradient_is_correct                             -- learned-input-range gradient fix (torch >= 2.14)
    calibrate_input_ranges                                      -- aihwkit's data-calibrated input ranges, seeded
Training (``training/``)
    fit_classifier, fit_hwa                                     -- digital and hardware-aware training, resumable
    create_model, list_models, register_model                   -- the model registry
    save_checkpoint, load_checkpoint, load_pretrained           -- plain, weights_only checkpoints
    save_hwa_checkpoint, load_hwa_model                         -- HWA checkpoints (before programming)
Drift-over-time evaluation (``evaluation/``)
    run_sweep, SweepModel                                       -- models x methods x times x chips, journaled
    Method, Digital, AnalogUncompensated, GlobalDriftCompensated, NoiseAwareBN, BNFineTune, standard_methods
    build_methods, MethodData, METHOD_NAMES                     -- methods by name
    Top1Accuracy, MeanIoU, DetectionAP                          -- metrics: metric(model) -> float (or dict of values)
    summarize, write_report                                     -- CSV / JSON / Markdown / PNG
    paired_differences                                          -- per-chip method differences, t intervals
    Task, run_comparison, load_config, sweep_task               -- the task-agnostic comparison
    run_noise_table                                             -- the comparison under every noise setting
Tasks (``tasks/``)
    get_task, list_tasks, register_task                         -- "cifar10" (aihwkit_nabn.tasks.cifar10), ...
Errors (``errors``)
    NABNError and its subclasses, each naming the problem
"""

from ._aihwkit.accelerated import (
    accelerate,
    acceleration_report,
    fused_enabled,
    fused_report,
    is_accelerated,
    restore_stock,
    set_fused,
)
from ._aihwkit.input_ranges import calibrate_input_ranges
from ._aihwkit.input_range_fix import (
    apply_input_range_fix,
    input_range_fix,
    input_range_fix_status,
    input_range_gradient_is_correct,
    remove_input_range_fix,
)
from .analog.chips import Chip, make_chips
from .analog.compensation import without_drift_compensation
from .analog.noise_settings import GaussianWeightNoiseModel, list_noise_settings, noise_setting
from .analog.convert import conversion_report, format_conversion_report, to_analog
from .analog.hwa_preset import HWA_PRESET_FIELDS, TorchHWAPreset, hwa_inference_config
from .analog.presets import PCMInferencePreset, apply_overrides, pcm_inference_config
from .analog.times import DEFAULT_TIMES, check_drift_time, parse_time, time_label
from .bn.calibrate import calibrate_bn, noise_aware_bn
from .bn.finetune import FrozenModel, bn_optimizer, bn_parameters, finetune_bn, finetuned_bn, freeze_all_but_bn
from .bn.layers import find_bn_layers
from .bn.snapshot import BNSnapshot, restore_bn, snapshot_bn
from .errors import (
    BatchNormConfigError,
    CalibrationDataError,
    CalibrationDataWarning,
    CheckpointError,
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    DriftTimeError,
    FineTuneError,
    NABNError,
    NoBatchNormError,
    NonFiniteActivationError,
)
from .evaluation.comparison import load_config, run_comparison
from .evaluation.noise_table import run_noise_table
from .evaluation.methods import (
    METHOD_NAMES,
    AnalogUncompensated,
    BNFineTune,
    Digital,
    GlobalDriftCompensated,
    Method,
    MethodData,
    NoiseAwareBN,
    build_methods,
    standard_methods,
)
from .evaluation.metrics import DetectionAP, MeanIoU, Top1Accuracy
from .evaluation.paired import paired_differences
from .evaluation.report import summarize, write_report
from .evaluation.sweep import SweepModel, run_sweep
from .evaluation.task import Task
from .evaluation.task_sweep import sweep_task
from .tasks import get_task, list_tasks, register_task
from .training.checkpoints import load_checkpoint, load_pretrained, save_checkpoint
from .training.digital import fit_classifier
from .training.hwa import fit_hwa
from .training.hwa_checkpoint import load_hwa_model, save_hwa_checkpoint
from .training.registry import create_model, list_models, register_model
from .utils.batches import TensorBatches

__version__ = "0.1.0"

__all__ = [
    # bn/
    "calibrate_bn", "noise_aware_bn", "snapshot_bn", "restore_bn", "BNSnapshot", "find_bn_layers",
    "finetune_bn", "finetuned_bn", "freeze_all_but_bn", "bn_parameters", "bn_optimizer", "FrozenModel",
    "TensorBatches",
    # analog/
    "PCMInferencePreset", "pcm_inference_config", "apply_overrides", "TorchHWAPreset", "hwa_inference_config",
    "HWA_PRESET_FIELDS", "to_analog", "conversion_report", "format_conversion_report", "Chip", "make_chips", "check_drift_time", "parse_time",
    "time_label", "DEFAULT_TIMES", "without_drift_compensation",
    "noise_setting", "list_noise_settings", "GaussianWeightNoiseModel",
    # _aihwkit/
    "accelerate", "restore_stock", "is_accelerated", "acceleration_report", "fused_report", "set_fused",
    "fused_enabled", "input_range_fix",
    "apply_input_range_fix", "remove_input_range_fix", "input_range_fix_status", "input_range_gradient_is_correct",
    "calibrate_input_ranges",
    # training/
    "fit_classifier", "fit_hwa", "create_model", "list_models", "register_model", "save_checkpoint",
    "load_checkpoint", "load_pretrained", "save_hwa_checkpoint", "load_hwa_model",
    # evaluation/
    "run_sweep", "SweepModel", "Method", "Digital", "AnalogUncompensated", "GlobalDriftCompensated", "NoiseAwareBN",
    "BNFineTune", "standard_methods", "build_methods", "MethodData", "METHOD_NAMES", "Top1Accuracy", "MeanIoU", "DetectionAP", "summarize",
    "paired_differences", "write_report", "Task", "run_comparison", "load_config", "sweep_task",
    "run_noise_table",
    # tasks/
    "get_task", "list_tasks", "register_task",
    # errors
    "NABNError", "NoBatchNormError", "BatchNormConfigError", "CalibrationDataError", "CalibrationDataWarning",
    "NonFiniteActivationError", "DriftTimeError", "CheckpointError", "FineTuneError", "ConfigError",
    "DataNotFoundError", "DataFormatError",
]
