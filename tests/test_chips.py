"""Chips: the user's model is never changed; seeds give independent or identical chips; BN states swap."""

import copy

import pytest
import torch

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.tiles import inference_tiles


def _tile_weights(model):
    return [t.tile.weight.detach().clone() for t in inference_tiles(model)]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_user_models_unchanged(digital, analog, images):
    digital_before, analog_before = _state(digital), _state(analog)
    chip = nb.Chip(analog, seed=3).drift_to(86400)
    nb.calibrate_bn(chip.model, images, num_samples=32, batch_size=16)
    for before, model in ((digital_before, digital), (analog_before, analog)):
        after = _state(model)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_identical_different_seed_differs(analog):
    a, b, c = nb.Chip(analog, seed=1), nb.Chip(analog, seed=1), nb.Chip(analog, seed=2)
    for chip in (a, b, c):
        chip.drift_to(3600)
    wa, wb, wc = _tile_weights(a.model), _tile_weights(b.model), _tile_weights(c.model)
    assert all(torch.equal(x, y) for x, y in zip(wa, wb))
    assert not any(torch.equal(x, z) for x, z in zip(wa, wc))


def test_drift_is_reproducible_and_time_dependent(analog):
    chip = nb.Chip(analog, seed=0)
    w1 = _tile_weights(chip.drift_to(1.0).model)
    w_year = _tile_weights(chip.drift_to(365 * 86400).model)
    w1_again = _tile_weights(chip.drift_to(1.0).model)
    assert all(torch.equal(x, y) for x, y in zip(w1, w1_again))
    # PCM conductances decay with time: the drifted weights shrink in magnitude
    assert sum(w.abs().sum() for w in w_year) < sum(w.abs().sum() for w in w1)


def test_make_chips_and_programming_differs_from_reference(analog):
    chips = nb.make_chips(analog, 3, seed=10)
    assert [c.seed for c in chips] == [10, 11, 12]
    ref = _tile_weights(analog)
    assert not torch.equal(_tile_weights(chips[0].model)[0], ref[0])


def test_bn_states_per_time_swap(analog, images):
    chip = nb.Chip(analog, seed=0)
    original = nb.snapshot_bn(chip.model)
    for t in (1.0, 86400.0):
        chip.drift_to(t)
        nb.calibrate_bn(chip.model, images, num_samples=32, batch_size=16)
        chip.save_bn_state()
    assert set(chip.bn_states) == {nb.Chip.ORIGINAL, 1.0, 86400.0}
    chip.load_bn_state(1.0)
    assert chip.bn_states[1.0].equals(nb.snapshot_bn(chip.model))
    assert not chip.bn_states[1.0].equals(chip.bn_states[86400.0])
    chip.load_bn_state(nb.Chip.ORIGINAL)
    assert nb.snapshot_bn(chip.model).equals(original)
    with pytest.raises(KeyError, match="holds no BatchNorm state"):
        chip.load_bn_state(42.0)


def test_without_drift_compensation_restores_alpha(analog, images):
    chip = nb.Chip(analog, seed=0).drift_to(86400 * 30)
    with torch.no_grad():
        compensated = chip.model(images[:8])
        with nb.without_drift_compensation(chip.model):
            raw = chip.model(images[:8])
    alphas = [float(t.alpha) for t in inference_tiles(chip.model)]
    assert all(a > 1.0 for a in alphas)  # drift lowers conductances, so compensation scales up
    assert not torch.allclose(compensated, raw)


def test_to_analog_keeps_layers_digital(digital):
    analog = nb.to_analog(digital, digital_layers=["0", "9"])
    assert type(analog[0]) is torch.nn.Conv2d and type(analog[9]) is torch.nn.Linear
    assert type(analog[3]).__name__.startswith("Analog")
    with pytest.raises(ValueError, match="not modules"):
        nb.to_analog(digital, digital_layers=["nope"])
    assert type(digital[3]) is torch.nn.Conv2d  # the user's model is untouched


def test_preset_overrides():
    config = nb.pcm_inference_config({"forward.out_noise": 0.0}, mapping__max_input_size=64)
    assert config.forward.out_noise == 0.0 and config.mapping.max_input_size == 64
    assert config.mapping.weight_scaling_omega == 1.0
    assert type(config.drift_compensation).__name__ == "GlobalDriftCompensation"
    with pytest.raises(AttributeError, match="unknown rpu_config field 'forward.nope'"):
        nb.pcm_inference_config({"forward.nope": 1})
