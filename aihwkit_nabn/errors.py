"""Exceptions raised by aihwkit-nabn. Each names the problem it reports."""


class NABNError(Exception):
    """Base class of every error raised by aihwkit-nabn."""


class NoBatchNormError(NABNError, ValueError):
    """The model has no (selected) BatchNorm layer that can be calibrated."""


class BatchNormConfigError(NABNError, ValueError):
    """A BatchNorm layer cannot be calibrated as configured (e.g. ``track_running_stats=False``)."""


class CalibrationDataError(NABNError, ValueError):
    """The calibration data is empty, of an unexpected type, or unusable (batches of one sample)."""


class NonFiniteActivationError(NABNError, FloatingPointError):
    """A BatchNorm layer saw NaN or Inf inputs during calibration; the previous statistics were restored."""


class DriftTimeError(NABNError, ValueError):
    """A drift time is negative, NaN or infinite, or one the chip's noise model is not defined at."""


class CheckpointError(NABNError, ValueError):
    """A checkpoint file is missing, unsafe to load, or does not match the model."""


class FineTuneError(NABNError, ValueError):
    """BatchNorm fine-tuning failed (a non-scalar, NaN/Inf or gradient-free loss); the previous BN state was restored."""


class ConfigError(NABNError, ValueError):
    """A command-line argument, a config value or an option is invalid (names the value and what is allowed)."""


class DataNotFoundError(NABNError, FileNotFoundError):
    """A dataset, split file or data source could not be found (names every place that was tried)."""


class DataFormatError(NABNError, ValueError):
    """A data file exists but cannot be used (wrong size, unknown class, out-of-range label); names the file."""


class CalibrationDataWarning(UserWarning):
    """The calibration data look unrepresentative (e.g. labels of only some classes: a class-sorted loader)."""
