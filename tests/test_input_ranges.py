"""The lean input-range cache: aihwkit's calibration, without copying every input row, to the same bit."""

import copy
from types import SimpleNamespace

import pytest
import torch

import aihwkit.inference.calibration.calibration as aihwkit_calibration
from aihwkit.inference.calibration import InputRangeCalibrationType

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.input_ranges import _STOCK_PRE_FORWARD, calibrate_input_ranges, lean_cache_pre_forward
from aihwkit_nabn._aihwkit.state import input_ranges

from conftest import tiny_net  # noqa: E402  pylint: disable=wrong-import-position


# aihwkit's hook reads the tile's input-range parameters (unused for caching)
TILE = SimpleNamespace(rpu_config=SimpleNamespace(pre_post=SimpleNamespace(input_range=None)))


def _inputs(rows, cols, zero_every, seed):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    x[::zero_every] = 0.0  # all-zero rows: aihwkit drops them before caching
    return x


@pytest.mark.parametrize("max_samples", [7, 1000])
def test_hook_leaves_aihwkits_cache_and_random_state(max_samples):
    # three batches into one cache: fewer rows than max_samples at first (1000), more later (7)
    batches = [_inputs(40, 5, 3, 1), _inputs(300, 5, 4, 2), _inputs(9, 5, 2, 3).reshape(3, 3, 5)]
    caches = {}
    for name, hook in (("stock", _STOCK_PRE_FORWARD), ("lean", lean_cache_pre_forward)):
        torch.manual_seed(11)
        cache = {"t": torch.tensor([])}
        for x in batches:
            hook(TILE, (x,), InputRangeCalibrationType.CACHE_QUANTILE, "t", cache, max_samples)
            caches.setdefault(name, []).append(cache["t"].clone())
        caches[name + "_rng"] = torch.get_rng_state()
    for stock, lean in zip(caches["stock"], caches["lean"]):
        assert stock.dtype == lean.dtype and torch.equal(stock, lean)
    assert torch.equal(caches["stock_rng"], caches["lean_rng"])  # the same draws: what runs after is unchanged
    assert caches["lean"][-1].shape[0] == min(max_samples, 26 + 225 + 4)
    assert not (caches["lean"][-1] == 0).all(-1).any()


def test_calibration_gives_aihwkits_ranges_and_restores_its_hook(images):
    analog = nb.to_analog(tiny_net())
    images = images.clone()
    images[::5] = 0.0  # whole zero images: all-zero rows in every layer's input
    ranges = {}
    for lean in (False, True):
        model = copy.deepcopy(analog)
        calibrate_input_ranges(model, images.split(32), seed=3, lean=lean)
        ranges[lean] = input_ranges(model)
        assert aihwkit_calibration._calibration_pre_forward is _STOCK_PRE_FORWARD
    assert ranges[True] == ranges[False]
    assert len(ranges[True]) == 3 and all(v > 0 for v in ranges[True].values())


def test_hook_restored_after_an_error(images):
    model = nb.to_analog(tiny_net())
    with pytest.raises(RuntimeError):
        calibrate_input_ranges(model, [images[:, :2]], seed=0)  # 2 channels into a 3-channel conv
    assert aihwkit_calibration._calibration_pre_forward is _STOCK_PRE_FORWARD


def test_other_calibration_types_use_aihwkits_hook():
    x = _inputs(50, 4, 5, 4)
    caches = []
    for hook in (_STOCK_PRE_FORWARD, lean_cache_pre_forward):
        cache = {"t": torch.tensor([])}
        hook(TILE, (x,), InputRangeCalibrationType.MAX, "t", cache)
        caches.append(cache["t"])
    assert torch.equal(caches[0], caches[1]) and caches[0].item() == x.abs().max().item()
