"""aihwkit-nabn: noise-aware BatchNorm calibration for analog (PCM) inference with IBM aihwkit.

Table of contents
-----------------
Deployment on simulated chips
    PCMInferencePreset, pcm_inference_config, apply_overrides   -- inference rpu_configs
    to_analog                                                   -- convert a trained model (deep copy)
    Chip, make_chips, check_drift_time                          -- programmed chips, drifted to time t
    without_drift_compensation                                  -- raw drifted read-out, for comparison
    accelerate, restore_stock, is_accelerated, acceleration_report -- same physics, faster layout
Noise-aware BatchNorm calibration
    calibrate_bn, noise_aware_bn                                -- re-estimate BN statistics on the chip
    restore_bn, snapshot_bn, BNSnapshot, find_bn_layers         -- exact undo
BatchNorm-only fine-tuning (Bhattacharjee et al. 2023)
    finetune_bn, finetuned_bn                                   -- train gamma/beta (and stats) on the chip
    freeze_all_but_bn, bn_parameters, bn_optimizer              -- the same in your own training loop
Drift-over-time evaluation
    run_sweep, SweepModel, DEFAULT_TIMES                        -- models x methods x times x chips
    Method, Digital, AnalogUncompensated, GlobalDriftCompensated, NoiseAwareBN, standard_methods
    BNFineTune                                                  -- method "bnft": finetune_bn per chip and time
    Top1Accuracy                                                -- metrics: metric(model) -> float
    summarize, write_report                                     -- CSV / JSON / Markdown / PNG
Hardware-aware training (HWA) on torch tiles
    TorchHWAPreset, hwa_inference_config, HWA_PRESET_FIELDS     -- StandardHWATrainingPreset for torch tiles
    train_hwa, save_hwa_checkpoint, load_hwa_model              -- HWA fine-tuning, plain HWA checkpoints
    apply_input_range_fix, input_range_gradient_is_correct      -- input-range gradient fix (torch >= 2.14)
The CIFAR-10 comparison (``aihwkit-nabn reproduce cifar10``)
    reproduce.run_comparison, reproduce.load_config             -- config-driven grid, retention, calibration size
"""

from .acceleration import accelerate, acceleration_report, is_accelerated, restore_stock
from .batchnorm import BNSnapshot, find_bn_layers, restore_bn, snapshot_bn
from .batches import TensorBatches
from .calibration import calibrate_bn, noise_aware_bn
from .chips import Chip, check_drift_time, make_chips
from .compensation import without_drift_compensation
from .deploy import to_analog
from .errors import (
    BatchNormConfigError,
    CalibrationDataError,
    CheckpointError,
    DriftTimeError,
    FineTuneError,
    NABNError,
    NoBatchNormError,
    NonFiniteActivationError,
)
from .finetune import FrozenModel, bn_optimizer, bn_parameters, finetune_bn, finetuned_bn, freeze_all_but_bn
from .methods import (
    AnalogUncompensated,
    BNFineTune,
    Digital,
    GlobalDriftCompensated,
    Method,
    NoiseAwareBN,
    standard_methods,
)
from .metrics import Top1Accuracy
from .presets import PCMInferencePreset, apply_overrides, pcm_inference_config
from .report import summarize, write_report
from .sweep import DEFAULT_TIMES, SweepModel, run_sweep
from .fixes import apply_input_range_fix, input_range_fix_status, input_range_gradient_is_correct
from .hwa_preset import HWA_PRESET_FIELDS, TorchHWAPreset, hwa_inference_config
from .hwa_training import load_hwa_model, save_hwa_checkpoint, train_hwa

__version__ = "0.1.0"
