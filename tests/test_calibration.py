"""calibrate_bn: statistics change, restore is exact, flags come back, analog tiles stay in eval."""

import copy

import pytest
import torch
from aihwkit.simulator.tiles.inference import InferenceTileWithPeriphery
from torch import nn

import aihwkit_nabn as nb
from aihwkit_nabn.bn.calibrate import PooledMoments


def test_calibration_changes_stats_and_restore_is_exact(analog, images):
    chip = nb.Chip(analog, seed=0).drift_to(86400)
    before = nb.snapshot_bn(chip.model)
    snap = nb.calibrate_bn(chip.model, images, num_samples=64, batch_size=16)
    assert snap.equals(before)
    assert snap.info["samples"] == 64 and snap.info["batches"] == 4
    after = nb.snapshot_bn(chip.model)
    for name in before.layer_names:
        assert not torch.equal(after.tensors[name]["running_mean"], before.tensors[name]["running_mean"])
        assert not torch.equal(after.tensors[name]["running_var"], before.tensors[name]["running_var"])
        # affine parameters are never touched by calibration
        assert torch.equal(after.tensors[name]["weight"], before.tensors[name]["weight"])
    nb.restore_bn(chip.model, snap)
    assert nb.snapshot_bn(chip.model).equals(before)


def test_pooled_statistics_are_exact_over_all_samples(digital, images):
    """The calibrated statistics equal those of all samples pooled, not an average of batch statistics."""
    model = digital
    captured = []
    hook = model[1].register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().clone()))
    nb.calibrate_bn(model, images, num_samples=90, batch_size=32)  # batches 32, 32, 26: unequal sizes
    hook.remove()
    x = torch.cat(captured).transpose(0, 1).reshape(8, -1).double()
    assert torch.allclose(model[1].running_mean.double(), x.mean(1), atol=1e-6)
    assert torch.allclose(model[1].running_var.double(), x.var(1, unbiased=True), rtol=1e-5)


def test_flags_restored_and_analog_tiles_stay_in_eval(analog, images):
    chip = nb.Chip(analog, seed=0).drift_to(3600)
    chip.model.train()
    chip.model[1].eval()  # an unusual mix of flags must come back as it was
    flags = {n: m.training for n, m in chip.model.named_modules()}
    seen_training_tiles = []
    alphas = []

    def spy(module, args):
        seen_training_tiles.append(module.training)
        alphas.append(float(module.alpha))

    hooks = [m.register_forward_pre_hook(spy) for m in chip.model.modules() if isinstance(m, InferenceTileWithPeriphery)]
    nb.calibrate_bn(chip.model, images, num_samples=32, batch_size=16)
    for h in hooks:
        h.remove()
    assert seen_training_tiles and not any(seen_training_tiles)
    # drift compensation was active: alpha at 1 day differs from 1
    assert all(a != 1.0 for a in alphas)
    assert {n: m.training for n, m in chip.model.named_modules()} == flags


def test_blend_mode_mixes_with_previous(digital, images):
    ref = nb.snapshot_bn(digital)
    nb.calibrate_bn(digital, images, num_samples=64, batch_size=32)
    full = nb.snapshot_bn(digital)
    ref.restore(digital)
    nb.calibrate_bn(digital, images, num_samples=64, batch_size=32, mode="blend", blend_weight=0.25)
    blended = digital[1].running_mean
    expect = 0.75 * ref.tensors["1"]["running_mean"] + 0.25 * full.tensors["1"]["running_mean"]
    assert torch.allclose(blended, expect, atol=1e-6)


def test_layer_selection(digital, images):
    before = nb.snapshot_bn(digital)
    nb.calibrate_bn(digital, images, num_samples=32, batch_size=16, layers=["4"])
    after = nb.snapshot_bn(digital)
    assert torch.equal(after.tensors["1"]["running_mean"], before.tensors["1"]["running_mean"])
    assert not torch.equal(after.tensors["4"]["running_mean"], before.tensors["4"]["running_mean"])
    nb.calibrate_bn(digital, images, num_samples=32, batch_size=16, layers=lambda n, m: isinstance(m, nn.BatchNorm1d))
    assert not torch.equal(nb.snapshot_bn(digital).tensors["8"]["running_mean"], before.tensors["8"]["running_mean"])


def test_context_manager_restores(digital, images):
    before = nb.snapshot_bn(digital)
    with nb.noise_aware_bn(digital, images, num_samples=32, batch_size=16):
        assert not nb.snapshot_bn(digital).equals(before)
    assert nb.snapshot_bn(digital).equals(before)


@pytest.mark.parametrize("kind", ["loader", "tuples", "dicts", "input_fn", "num_batches"])
def test_accepts_batch_layouts(digital, images, kind):
    labels = torch.zeros(len(images), dtype=torch.long)
    kwargs = {}
    if kind == "loader":
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=16)
    elif kind == "tuples":
        data = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 96, 16)]
    elif kind == "dicts":
        data = [{"img": images[i:i + 16], "y": labels[i:i + 16]} for i in range(0, 96, 16)]
        kwargs["input_key"] = "img"
    elif kind == "input_fn":
        data = [{"nested": (images[i:i + 16],)} for i in range(0, 96, 16)]
        kwargs["input_fn"] = lambda b: b["nested"][0]
    else:
        data = [images[i:i + 16] for i in range(0, 96, 16)]
        kwargs.update(num_samples=None, num_batches=2)
    snap = nb.calibrate_bn(digital, data, num_samples=kwargs.pop("num_samples", 48), **kwargs)
    assert snap.info["samples"] == (32 if kind == "num_batches" else 48)


def test_pooled_moments_match_torch():
    x = torch.randn(7, 3, 5)
    m = PooledMoments()
    m.add(x[:3])
    m.add(x[3:])
    mean, var = m.mean_var()
    flat = x.transpose(0, 1).reshape(3, -1).double()
    assert torch.allclose(mean, flat.mean(1)) and torch.allclose(var, flat.var(1))


class TwoInputs(nn.Module):
    """A model called as ``model(x, scale)`` with a dict output, the kind ``forward_fn`` is for."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, scale):
        return {"out": self.net(x * scale)}


def test_forward_fn_calls_the_model_its_way(digital, images):
    model = TwoInputs(digital)
    batches = [{"pixels": images[i:i + 16], "scale": 2.0} for i in range(0, 64, 16)]
    calls = []

    def forward_fn(m, batch):
        calls.append(batch["scale"])
        return m(batch["pixels"], batch["scale"])

    plain = copy.deepcopy(digital)  # the plain network, statistics as before calibration
    snap = nb.calibrate_bn(model, batches, num_samples=None, input_fn=lambda b: b["pixels"],
                           forward_fn=lambda m, x: forward_fn(m, {"pixels": x, "scale": 2.0}))
    assert calls == [2.0] * 4 and snap.info["samples"] == 64 and snap.info["batches"] == 4
    # the same statistics as calibrating the plain network on the scaled images
    nb.calibrate_bn(plain, images[:64] * 2.0, num_samples=None, batch_size=16)
    assert snap.layer_names == [f"net.{n}" for n in nb.snapshot_bn(plain).layer_names]
    for name in nb.snapshot_bn(plain).layer_names:
        got, want = dict(model.net.named_modules())[name], dict(plain.named_modules())[name]
        assert torch.equal(got.running_mean, want.running_mean) and torch.equal(got.running_var, want.running_var)


def test_batches_from_a_class_sorted_loader_warn(digital, images):
    labels = torch.arange(10).repeat_interleave(10)[:96]  # sorted by class, like an unshuffled ImageFolder
    sorted_batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 96, 16)]
    with pytest.warns(nb.CalibrationDataWarning, match=r"only 4 of 10 classes \(0, 1, 2, 3\).*shuffle=True"):
        nb.calibrate_bn(digital, sorted_batches, num_samples=32)
    shuffled = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    balanced = [(images[shuffled[i:i + 16]], labels[shuffled[i:i + 16]]) for i in range(0, 96, 16)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", nb.CalibrationDataWarning)
        nb.calibrate_bn(digital, balanced, num_samples=96)  # every class present: no warning
        nb.calibrate_bn(digital, images, num_samples=32)  # no labels: nothing to check
    with pytest.warns(nb.CalibrationDataWarning, match="only 4 of 12 classes"):
        nb.calibrate_bn(digital, sorted_batches, num_samples=32, num_classes=12)
