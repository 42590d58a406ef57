"""Bad input gets a clear error that names the problem, and nothing is lost."""

import math

import pytest
import torch
from torch import nn

import aihwkit_nabn as nb


def test_model_without_batchnorm(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(nb.NoBatchNormError, match="has no BatchNorm layer"):
        nb.calibrate_bn(model, images)


def test_untracked_batchnorm(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(nb.BatchNormConfigError, match=r"\['1'\].*track_running_stats=False"):
        nb.calibrate_bn(model, images)


def test_unknown_layer_name(digital, images):
    with pytest.raises(nb.NoBatchNormError, match="not BatchNorm layers of this model: \\['nope'\\]"):
        nb.calibrate_bn(digital, images, layers=["nope"])


@pytest.mark.parametrize("data", [[], torch.empty(0, 3, 8, 8)])
def test_empty_data(digital, data):
    before = nb.snapshot_bn(digital)
    with pytest.raises(nb.CalibrationDataError, match="no samples"):
        nb.calibrate_bn(digital, data)
    assert nb.snapshot_bn(digital).equals(before)


def test_batch_of_one_sample(digital, images):
    before = nb.snapshot_bn(digital)
    with pytest.raises(nb.CalibrationDataError, match="single sample"):
        nb.calibrate_bn(digital, [images[:8], images[8:9]])
    assert nb.snapshot_bn(digital).equals(before)


def test_non_finite_activations_name_layer_and_restore(analog, images):
    chip = nb.Chip(analog, seed=0).drift_to(1.0)
    before = nb.snapshot_bn(chip.model)
    # poison the second conv's output: the BN after it (layer '4') is the first to see NaN
    hook = chip.model[3].register_forward_hook(lambda m, a, out: out * float("nan"))
    with pytest.raises(nb.NonFiniteActivationError, match="BatchNorm layer '4'.*restored"):
        nb.calibrate_bn(chip.model, images, num_samples=64, batch_size=16)
    hook.remove()
    assert nb.snapshot_bn(chip.model).equals(before)
    assert not any(m.training for m in chip.model.modules())


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf"), "soon"])
def test_bad_drift_times(analog, t):
    chip = nb.Chip(analog, seed=0)
    with pytest.raises(nb.DriftTimeError):
        chip.drift_to(t)


@pytest.mark.parametrize("batch", ["strings", 42, (1, 2)])
def test_unexpected_batch_type(digital, batch):
    with pytest.raises(nb.CalibrationDataError, match="cannot take a model input|not iterable"):
        nb.calibrate_bn(digital, [batch] if batch != 42 else 42)


def test_dict_without_known_key(digital, images):
    with pytest.raises(nb.CalibrationDataError, match="input_key"):
        nb.calibrate_bn(digital, [{"pixels": images}])


def test_bad_limits(digital, images):
    with pytest.raises(nb.CalibrationDataError, match="num_samples must be a positive integer"):
        nb.calibrate_bn(digital, images, num_samples=0)
    with pytest.raises(ValueError, match="mode must be"):
        nb.calibrate_bn(digital, images, mode="average")


def test_restore_into_other_model_is_refused(digital):
    snap = nb.snapshot_bn(digital)
    other = nn.Sequential(nn.BatchNorm2d(3))
    with pytest.raises(nb.NoBatchNormError, match="cannot restore"):
        nb.restore_bn(other, snap)


def test_chip_needs_analog_model(digital):
    with pytest.raises(ValueError, match="no aihwkit analog tile"):
        nb.Chip(digital, seed=0)


def test_cli_time_parsing():
    from aihwkit_nabn.analog.times import parse_time, parse_times

    assert parse_times("1s,1h,1d,30d,1y") == [1.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0]
    with pytest.raises(nb.DriftTimeError):
        parse_time("-5s")
    with pytest.raises(nb.DriftTimeError):
        parse_time("a week")
    assert math.isclose(parse_time("2.5min"), 150.0)
