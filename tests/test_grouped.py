"""Grouped / depthwise convolutions become one analog convolution per group (aihwkit 1.1 refuses groups > 1).

Slow torchvision models (LRASPP, EfficientNet-B0; ~20 s of aihwkit conversion each) run only with
GROUPED_SLOW=1.
"""

import copy
import json
import math
import os
import sys

import pytest
import torch
import torchvision
from torch import nn

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn import AnalogConv2d
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import (
    BoundManagementType,
    NoiseManagementType,
    RPUDataType,
)

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.grouped import GroupedConv2d, grouped_conv_names, merge_grouped_convs, split_grouped_convs
from aihwkit_nabn.analog.convert import conversion_report, format_conversion_report, to_analog


def convert_to_analog_grouped(model, rpu_config, keep=(), exclude_modules=None):
    """``to_analog`` without acceleration (the layers as aihwkit builds them); ``keep`` stays digital."""
    keep = [keep] if isinstance(keep, str) else list(keep)
    return to_analog(model, rpu_config, digital_layers=keep + list(exclude_modules or []), accelerate=False)

SLOW = os.environ.get("GROUPED_SLOW") == "1"
AIHWKIT_GROUPS_ERROR = "Only one group is supported"

# fp32: per-group conv vs grouped conv only differ in summation order.
ATOL32, RTOL32 = 1e-5, 1e-5
ATOL64, RTOL64 = 1e-12, 1e-12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Hundreds of tiny convs/matmuls: intra-op threads only add contention
    on a shared 2-core machine (2 threads was ~2-4x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------- configs
def ideal_config(double: bool = False) -> TorchInferenceRPUConfig:
    """Analog tile == matmul: perfect forward, max-abs weight mapping."""
    cfg = TorchInferenceRPUConfig()
    cfg.forward.is_perfect = True
    cfg.mapping.weight_scaling_omega = 1.0
    if double:
        cfg.runtime.data_type = RPUDataType.DOUBLE
    return cfg


def knobs_off_config() -> TorchInferenceRPUConfig:
    """Not is_perfect, but every non-ideality switched off."""
    cfg = TorchInferenceRPUConfig()
    cfg.mapping.weight_scaling_omega = 1.0
    f = cfg.forward
    f.inp_res = 0.0
    f.out_res = 0.0
    f.out_noise = 0.0
    f.inp_noise = 0.0
    f.w_noise = 0.0
    f.inp_bound = 0.0  # <= 0: no clipping
    f.out_bound = 0.0
    f.noise_management = NoiseManagementType.NONE
    f.bound_management = BoundManagementType.NONE
    return cfg


def noisy_config() -> TorchInferenceRPUConfig:
    cfg = TorchInferenceRPUConfig()
    cfg.mapping.weight_scaling_omega = 1.0
    cfg.noise_model = PCMLikeNoiseModel(g_max=25.0)
    cfg.drift_compensation = GlobalDriftCompensation()
    return cfg


class TinyNet(nn.Module):
    """Dense, depthwise (with multiplier) and grouped convs with BatchNorm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.gc = nn.Sequential(nn.Conv2d(16, 16, 3, padding="same", groups=4), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.gc(self.dw(self.stem(x)))
        return self.head(x.mean((2, 3)))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    # Non-trivial BN statistics/affine so eval mode is not an identity.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def state_snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [(n, type(m)) for n, m in model.named_modules()],
    )


def assert_same_state(model: nn.Module, snap) -> None:
    state, types = snap
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert [(n, type(m)) for n, m in model.named_modules()] == types


# ------------------------------------------------------- GroupedConv2d numerics
CASES = [
    # in, out, groups, kwargs
    (4, 6, 2, dict(kernel_size=3)),
    (4, 6, 2, dict(kernel_size=3, stride=2, padding=1, bias=False)),
    (8, 8, 4, dict(kernel_size=3, padding=(1, 2), dilation=(2, 1))),
    (8, 12, 4, dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0))),
    (8, 8, 4, dict(kernel_size=3, padding="same", dilation=2)),
    (8, 8, 4, dict(kernel_size=4, padding="same")),  # even kernel: asymmetric 'same'
    (8, 8, 4, dict(kernel_size=3, padding="valid", bias=False)),
    (8, 8, 8, dict(kernel_size=3, padding=1)),  # depthwise
    (8, 16, 8, dict(kernel_size=5, stride=2, padding=2, bias=False)),  # depthwise, multiplier 2
    (6, 6, 6, dict(kernel_size=3, padding=2, dilation=2)),  # dilated depthwise
    (8, 8, 2, dict(kernel_size=3, padding=1, padding_mode="reflect")),
    (8, 8, 4, dict(kernel_size=3, padding=(1, 2), padding_mode="circular")),
    (8, 8, 8, dict(kernel_size=3, stride=2, padding=1, padding_mode="replicate")),
    (8, 8, 4, dict(kernel_size=(4, 3), padding="same", dilation=(1, 2), padding_mode="reflect")),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("cin,cout,g,kw", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grouped_conv_matches_nn_conv(cin, cout, g, kw, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, groups=g, **kw).to(dtype)
    split = GroupedConv2d(conv)
    assert len(split.convs) == g and all(type(c) is nn.Conv2d and c.groups == 1 for c in split.convs)
    x = torch.randn(3, cin, 9, 11, dtype=dtype)
    ref, out = conv(x), split(x)
    assert out.shape == ref.shape and out.dtype == dtype
    atol, rtol = (ATOL32, RTOL32) if dtype == torch.float32 else (ATOL64, RTOL64)
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    # Unbatched (C, H, W) input like nn.Conv2d.
    torch.testing.assert_close(split(x[0]), conv(x[0]), atol=atol, rtol=rtol)


def test_grouped_conv_gradients_match():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4).double()
    split = GroupedConv2d(conv)
    x1 = torch.randn(2, 8, 7, 7, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    conv(x1).square().sum().backward()
    split(x2).square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=ATOL64, rtol=RTOL64)
    w_grad = torch.cat([c.weight.grad for c in split.convs])
    b_grad = torch.cat([c.bias.grad for c in split.convs])
    torch.testing.assert_close(w_grad, conv.weight.grad, atol=ATOL64, rtol=RTOL64)
    torch.testing.assert_close(b_grad, conv.bias.grad, atol=ATOL64, rtol=RTOL64)


def test_grouped_conv_attributes_repr_and_roundtrip():
    conv = nn.Conv2d(8, 16, (3, 5), stride=2, padding=(1, 2), dilation=1, groups=4, bias=False)
    split = GroupedConv2d.from_conv(conv)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(split, attr) == getattr(conv, attr), attr
    assert split.padding_mode == "zeros"
    text = repr(split)
    assert "8, 16, kernel_size=(3, 5)" in text and "groups=4" in text and "bias=False" in text
    back = split.to_conv()
    assert back.groups == 4 and back.bias is None and back.padding == conv.padding
    assert torch.equal(back.weight, conv.weight)
    # The copy is independent of the source conv.
    with torch.no_grad():
        split.convs[0].weight.zero_()
    assert conv.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="groups > 1"):
        GroupedConv2d(nn.Conv2d(4, 4, 3))


# ------------------------------------------------------- split_grouped_convs
def test_split_does_not_mutate_and_replaces_only_grouped():
    net = tiny_net()
    snap = state_snapshot(net)
    split = split_grouped_convs(net)
    assert_same_state(net, snap)
    assert type(net.dw[0]) is nn.Conv2d and net.dw[0].groups == 8
    assert isinstance(split.dw[0], GroupedConv2d) and isinstance(split.gc[0], GroupedConv2d)
    assert type(split.stem[0]) is nn.Conv2d
    assert grouped_conv_names(net) == ["dw.0", "gc.0"] and grouped_conv_names(split) == []
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(split(x), net(x), atol=ATOL32, rtol=RTOL32)
    # Parameters are copies, not shared with the user's model.
    with torch.no_grad():
        for p in split.parameters():
            p.add_(1.0)
    assert_same_state(net, snap)


def test_split_root_conv_shared_conv_and_subclass():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    assert isinstance(split_grouped_convs(conv), GroupedConv2d)
    shared = nn.Sequential(conv, nn.ReLU(), conv)
    split = split_grouped_convs(shared)
    assert isinstance(split[0], GroupedConv2d) and split[0] is split[2]

    class MyConv(nn.Conv2d):  # subclasses may compute something else: left alone
        pass

    model = nn.Sequential(MyConv(4, 4, 3, groups=2))
    assert type(split_grouped_convs(model)[0]) is MyConv


@pytest.mark.parametrize(
    "name,match",
    [
        ("nope.0", "'nope.0' is not a module"),
        ("stem.0", "'stem.0' is not a grouped nn.Conv2d .*groups=1"),
        ("stem.1", "'stem.1' is not a grouped nn.Conv2d .*BatchNorm2d"),
    ],
)
def test_keep_bad_name_raises(name, match):
    with pytest.raises(ValueError, match=match):
        split_grouped_convs(tiny_net(), keep=[name])


# ------------------------------------------------------- analog conversion
def test_raw_tiny_net_conversion_fails_today():
    with pytest.raises(ValueError, match=f"^{AIHWKIT_GROUPS_ERROR}$"):
        convert_to_analog(tiny_net(), ideal_config())


@pytest.mark.parametrize("cfg_fn", [ideal_config, knobs_off_config], ids=["is_perfect", "knobs_off"])
def test_analog_ideal_matches_digital_fp32(cfg_fn):
    net = tiny_net()
    digital = split_grouped_convs(net)
    analog = convert_to_analog(digital, cfg_fn(), inplace=False).eval()
    assert all(isinstance(c, AnalogConv2d) for c in analog.dw[0].convs)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        ref, out = net(x), analog(x)
    # Weight mapping divides by max|w| per tile and multiplies back: a few ulp.
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # Layer by layer: each grouped conv alone.
    with torch.no_grad():
        h = torch.randn(2, 8, 8, 8)
        torch.testing.assert_close(analog.dw[0](h), net.dw[0](h), atol=1e-5, rtol=1e-4)


def test_analog_ideal_matches_digital_fp64():
    net = tiny_net().double()
    analog = convert_to_analog_grouped(net, ideal_config(double=True)).eval()
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(analog(x), net(x), atol=1e-12, rtol=1e-12)


def test_noisy_program_drift_chips_and_bn_reestimation():
    net = tiny_net()
    snap = state_snapshot(net)
    analog = convert_to_analog_grouped(net, noisy_config()).eval()
    assert_same_state(net, snap)
    x = torch.randn(8, 3, 12, 12)
    with torch.no_grad():
        ideal = net(x)

    def chip(seed, t=86400.0):
        torch.manual_seed(seed)
        model = copy.deepcopy(analog).eval()
        model.program_analog_weights()
        model.drift_analog_weights(t)
        return model

    def run(model):
        torch.manual_seed(123)  # output noise is drawn per forward
        with torch.no_grad():
            return model(x)

    chip_a = chip(1)
    out_a, out_a2, out_b = run(chip_a), run(chip(1)), run(chip(2))
    assert torch.isfinite(out_a).all() and out_a.shape == ideal.shape
    assert not torch.equal(out_a, ideal)  # noise really is on
    assert torch.equal(out_a, out_a2)  # a chip is reproducible from its seed
    assert not torch.equal(out_a, out_b)  # different chips differ
    # Noisy, but still the same function (tiny net, 1 day drift, compensated).
    assert (out_a - ideal).abs().mean() < 0.5 * ideal.abs().mean() + 0.05
    # Each group is its own tile with its own global drift compensation factor.
    alphas = [float(t.alpha) for c in chip_a.dw[0].convs for t in c.analog_tiles()]
    assert len(alphas) == 8 and all(a != 1.0 and math.isfinite(a) for a in alphas)
    assert len(set(alphas)) > 1

    # BN re-estimation on the drifted chip: only BN in train mode, cumulative average.
    bns = [m for m in chip_a.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    assert not chip_a.training and not any(t.training for t in chip_a.analog_tiles())
    with torch.no_grad():
        for i in range(3):
            chip_a(torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)))
    for bn, s in zip(bns, saved):
        assert int(bn.num_batches_tracked) == 3
        assert not torch.equal(bn.running_mean, s["running_mean"])
        assert torch.isfinite(bn.running_var).all()
    # Restore bit for bit.
    for bn, s, mom in zip(bns, saved, momenta):
        with torch.no_grad():
            for k, v in bn.state_dict().items():
                v.copy_(s[k])
        bn.momentum = mom
        bn.eval()
    for bn, s in zip(bns, saved):
        for k, v in bn.state_dict().items():
            assert torch.equal(v, s[k]), k


# ------------------------------------------------------- keep / exclude / report
def test_keep_grouped_conv_digital_and_report():
    net = tiny_net()
    split = split_grouped_convs(net, keep=["gc.0"])
    assert type(split.gc[0]) is nn.Conv2d and split.gc[0].groups == 4
    assert isinstance(split.dw[0], GroupedConv2d)
    # aihwkit needs the kept name excluded too, otherwise it raises as before.
    with pytest.raises(ValueError, match=AIHWKIT_GROUPS_ERROR):
        convert_to_analog(split, ideal_config())
    analog = convert_to_analog(split, ideal_config(), exclude_modules=["gc.0"]).eval()
    report = conversion_report(analog)
    assert report["digital"] == {"gc.0": "Conv2d(groups=4)"}
    assert "gc.0" not in report["analog"]
    assert report["split"] == {
        "dw.0": {"groups": 8, "analog_groups": 8, "layers": [f"dw.0.convs.{i}" for i in range(8)]}
    }
    for child in report["split"]["dw.0"]["layers"]:
        assert report["analog"][child]["type"] == "AnalogConv2d"
        assert report["analog"][child]["tiles"] == 1
        assert report["analog"][child]["out_features"] == 2  # depthwise multiplier 2
        assert report["analog"][child]["in_features"] == 9
    counts = report["counts"]
    assert counts == {
        "analog_layers": 1 + 8 + 1,  # stem, dw groups, head
        "analog_tiles": len(list(analog.analog_tiles())),
        "digital_layers": 1,
        "split_convs": 1,
        "split_groups": 8,
        "analog_groups": 8,
    }
    json.loads(json.dumps(report))
    text = format_conversion_report(report)
    assert "split    dw.0: 8/8 groups analog" in text and "digital  gc.0: Conv2d(groups=4)" in text
    # One-step helper: same structure; bare string accepted.
    analog2 = convert_to_analog_grouped(net, ideal_config(), keep="gc.0")
    assert conversion_report(analog2) == report
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(analog(x), net(x), atol=1e-5, rtol=1e-4)


def test_exclude_split_container_keeps_groups_digital():
    # the container path: split, then aihwkit skips the whole container (its groups stay digital)
    net = tiny_net()
    analog = convert_to_analog(split_grouped_convs(net), ideal_config(), exclude_modules=["dw.0"])
    report = conversion_report(analog)
    assert report["split"]["dw.0"]["analog_groups"] == 0
    assert report["split"]["gc.0"]["analog_groups"] == 4
    assert sorted(report["digital"]) == [f"dw.0.convs.{i}" for i in range(8)]
    assert "dw.0: 0/8 groups analog" in format_conversion_report(report)


def test_to_analog_grouped_digital_mode_and_bad_mode():
    net = tiny_net()
    analog = to_analog(net, ideal_config(), grouped="digital")
    report = conversion_report(analog)
    assert report["digital"] == {"dw.0": "Conv2d(groups=8)", "gc.0": "Conv2d(groups=4)"} and not report["split"]
    assert report["counts"]["analog_layers"] == 2  # stem and head
    with pytest.raises(nb.ConfigError, match="grouped must be one of"):
        to_analog(net, ideal_config(), grouped="maybe")
    with pytest.raises(nb.ConfigError, match="not modules"):
        to_analog(net, ideal_config(), digital_layers=["nope"])


def test_chips_drift_calibration_and_restore_on_a_depthwise_model():
    """The plugin's own path on a model with grouped convolutions: accelerated, chips, drift, calibrate, undo."""
    torch.manual_seed(0)
    net = tiny_net()
    analog = nb.to_analog(net)  # PCMInferencePreset, accelerated
    assert set(nb.acceleration_report(analog).values()) == {"accelerated"}
    images = torch.randn(32, 3, 12, 12)
    chips = nb.make_chips(analog, n=2, seed=0)
    outs = []
    for chip in chips:
        chip.drift_to(365 * 86400.0)
        before = nb.snapshot_bn(chip.model)
        with torch.no_grad():
            drifted = chip.model(images[:4])
        snapshot = nb.calibrate_bn(chip.model, images, num_samples=32, batch_size=16)
        assert not nb.snapshot_bn(chip.model).equals(before)  # the statistics moved
        with torch.no_grad():
            calibrated = chip.model(images[:4])
        assert torch.isfinite(calibrated).all() and not torch.equal(drifted, calibrated)
        nb.restore_bn(chip.model, snapshot)
        assert nb.snapshot_bn(chip.model).equals(before)  # exact undo
        outs.append(drifted)
    assert not torch.equal(outs[0], outs[1])  # independent chips


def test_merge_roundtrip_digital_and_analog():
    net = tiny_net()
    snap = state_snapshot(net)
    back = merge_grouped_convs(split_grouped_convs(net))
    assert_same_state(back, snap)  # bit for bit, same module types
    analog = convert_to_analog_grouped(net, ideal_config())
    exported = merge_grouped_convs(analog)  # analog children read via get_weights()
    assert type(exported.dw[0]) is nn.Conv2d and exported.dw[0].groups == 8
    torch.testing.assert_close(exported.dw[0].weight, net.dw[0].weight, atol=1e-7, rtol=1e-6)
    assert isinstance(analog.dw[0], GroupedConv2d)  # merge copies


def test_root_grouped_conv_converted_and_reported():
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    analog = convert_to_analog_grouped(conv, ideal_config())
    assert isinstance(analog, GroupedConv2d)  # AnalogWrapper subclass of the container
    report = conversion_report(analog)
    assert report["split"] == {"": {"groups": 2, "analog_groups": 2, "layers": ["convs.0", "convs.1"]}}
    assert sorted(report["analog"]) == ["convs.0", "convs.1"]
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(analog(x), conv(x), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------- torchvision models
def _check_model(model, size, n_groups=None):
    model = model.eval()
    snap = state_snapshot(model)
    with pytest.raises(ValueError, match=f"^{AIHWKIT_GROUPS_ERROR}$"):
        convert_to_analog(model, ideal_config())
    analog = convert_to_analog_grouped(model, ideal_config()).eval()
    assert_same_state(model, snap)
    report = conversion_report(analog)
    counts = report["counts"]
    assert counts["digital_layers"] == 0
    assert counts["split_groups"] == counts["analog_groups"] > 0
    assert counts["analog_tiles"] == len(list(analog.analog_tiles()))
    if n_groups is not None:
        assert counts["split_groups"] == n_groups
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref, out = model(x), analog(x)
    if isinstance(ref, dict):
        ref, out = ref["out"], out["out"]
    assert torch.isfinite(out).all() and out.shape == ref.shape
    scale = ref.abs().max().item()
    assert scale > 0 and math.isfinite(scale)
    assert (out - ref).abs().max().item() <= 1e-4 * scale
    return report


def test_mobilenet_v3_small_converts():
    torch.manual_seed(0)
    report = _check_model(torchvision.models.mobilenet_v3_small(weights=None), 32, n_groups=2456)
    assert report["counts"]["split_convs"] == 11
    assert report["split"]["features.1.block.0.0"]["groups"] == 16
    assert report["analog"]["features.1.block.0.0.convs.3"]["type"] == "AnalogConv2d"


def test_regnet_x_400mf_converts():
    torch.manual_seed(0)
    _check_model(torchvision.models.regnet_x_400mf(weights=None), 32, n_groups=380)


@pytest.mark.skipif(not SLOW, reason="~20 s of aihwkit conversion; set GROUPED_SLOW=1")
def test_lraspp_mobilenet_v3_large_converts():
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    _check_model(model, 64)


@pytest.mark.skipif(not SLOW, reason="~25 s of aihwkit conversion; set GROUPED_SLOW=1")
def test_efficientnet_b0_converts():
    torch.manual_seed(0)
    _check_model(torchvision.models.efficientnet_b0(weights=None), 32)
