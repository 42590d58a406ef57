"""Equality tests for aihwkit_nabn._aihwkit.accelerated (and .im2col, .mvm).

Every comparison runs aihwkit's stock layer and an accelerated deep copy of it
from the same ``torch.manual_seed`` and requires *bitwise* equality
(``torch.equal``; tolerance 0). The acceleration only re-lays-out work (one
strided copy for im2col, batch-wide col2im in ATen's summation order, removed
redundant clones, single-pass max/min reductions, in-place ops without
autograd); it never reorders floating-point arithmetic, so any difference is a
bug. The tests fail if the accelerated path draws random numbers in a different
order, skips or adds a quantisation/noise step, or sums gradients differently.
"""

# pylint: disable=missing-function-docstring, redefined-outer-name

import copy

import pytest
import torch
from torch import nn

from aihwkit.exceptions import ModuleError
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn import AnalogConv1d, AnalogConv2d, AnalogLinear
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import (
    QuantizedTorchInferenceRPUConfig,
    TorchInferenceRPUConfig,
    TorchInferenceRPUConfigIRDropT,
)
from aihwkit.simulator.parameters.enums import (
    BoundManagementType,
    NoiseManagementType,
    WeightClipType,
    WeightModifierType,
    WeightRemapType,
)

from aihwkit_nabn._aihwkit.accelerated import accelerate, acceleration_report, is_accelerated, restore_stock
from aihwkit_nabn._aihwkit.fused import is_speculative
from aihwkit_nabn._aihwkit.im2col import im2col

torch.set_num_threads(min(2, torch.get_num_threads()))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------- configs


def pcm_config(max_in: int = 0, max_out: int = 0, **fwd) -> TorchInferenceRPUConfig:
    """(a) default PCM preset of the project."""
    rpu = TorchInferenceRPUConfig()
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.max_input_size = max_in
    rpu.mapping.max_output_size = max_out
    for key, val in fwd.items():
        setattr(rpu.forward, key, val)
    return rpu


def hwa_config(max_in: int = 512, max_out: int = 0) -> TorchInferenceRPUConfig:
    """(b) StandardHWATrainingPreset settings the torch tile supports."""
    rpu = TorchInferenceRPUConfig()
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = max_in
    rpu.mapping.max_output_size = max_out
    rpu.mapping.digital_bias = True
    rpu.mapping.learn_out_scaling = True
    rpu.mapping.out_scaling_columnwise = True
    rpu.forward.inp_res = 254.0
    rpu.forward.out_res = 254.0
    rpu.forward.bound_management = BoundManagementType.NONE
    rpu.forward.noise_management = NoiseManagementType.CONSTANT
    rpu.forward.nm_thres = 1.0
    rpu.forward.out_noise = 0.04
    rpu.forward.out_bound = 10.0
    rpu.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC
    rpu.clip.type = WeightClipType.FIXED_VALUE
    rpu.clip.fixed_value = 1.0
    rpu.modifier.type = WeightModifierType.ADD_NORMAL
    rpu.modifier.std_dev = 0.02
    ir = rpu.pre_post.input_range
    ir.enable = True
    ir.init_value = 3.0
    ir.init_from_data = 100
    ir.init_std_alpha = 3.0
    ir.decay = 0.001
    ir.input_min_percentage = 0.95
    ir.manage_output_clipping = False
    ir.gradient_scale = 1.0
    ir.gradient_relative = True
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    return rpu


# ----------------------------------------------------------------- helpers


def pair(factory, device: str = "cpu"):
    """(stock, accelerated) twins built by ``factory`` from the same seeds.

    Built twice rather than deep-copied: aihwkit's ``copy.deepcopy`` drops the
    tile-weight gradient hook that ``set_scales`` registers (grad / scales**2),
    so a deep copy is *not* a gradient twin of its original.
    """
    torch.manual_seed(0)
    stock = factory().to(device)
    torch.manual_seed(0)
    acc = accelerate(factory().to(device))
    return stock, acc


def run(module: nn.Module, x: torch.Tensor, seed: int = 1234) -> torch.Tensor:
    torch.manual_seed(seed)
    if x.is_cuda:
        torch.cuda.manual_seed_all(seed)
    return module(x)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert a.stride() == b.stride(), "output memory layout differs"
    assert torch.equal(a, b), f"max abs diff {(a - b).abs().max().item()}"


def programmed(layer: nn.Module, t_inference: float = 3600.0) -> nn.Module:
    layer.eval()
    torch.manual_seed(7)
    layer.program_analog_weights()
    layer.drift_analog_weights(t_inference)
    return layer


def compare_fwd_bwd(stock, acc, x, seed=1234, check_grad=True):
    xs = x.clone().requires_grad_(check_grad)
    xa = x.clone().requires_grad_(check_grad)
    ys, ya = run(stock, xs, seed), run(acc, xa, seed)
    assert_same(ys, ya)
    if not check_grad:
        return ys
    g = torch.randn(ys.shape, generator=torch.Generator().manual_seed(3)).to(ys.device)
    (ys * g).sum().backward()
    (ya * g).sum().backward()
    assert_same(xs.grad, xa.grad)
    ps, pa = dict(stock.named_parameters()), dict(acc.named_parameters())
    assert ps.keys() == pa.keys()
    n_grads = 0
    for name, p_s in ps.items():
        p_a = pa[name]
        assert (p_s.grad is None) == (p_a.grad is None), name
        if p_s.grad is not None:
            n_grads += 1
            assert torch.equal(p_s.grad, p_a.grad), name
    assert n_grads > 0
    # stateful buffers (input range init from data, ...)
    for (n_s, b_s), (_, b_a) in zip(stock.named_buffers(), acc.named_buffers()):
        assert torch.equal(b_s, b_a), n_s
    return ys


CONVS = [
    # in, out, kernel, stride, padding, dilation, bias, H, W
    (3, 16, 3, 1, 1, 1, False, 10, 10),
    (6, 8, 3, 2, 1, 1, True, 9, 11),
    (8, 8, 1, 1, 0, 1, False, 7, 7),
    (8, 12, 1, 2, 0, 1, True, 9, 8),
    (4, 6, (3, 2), (2, 1), (1, 2), (2, 1), True, 12, 10),
    (5, 7, 2, 3, 0, 1, True, 11, 11),
]
SPLITS = [(0, 0), (20, 5)]  # single tile; 3 x 2 tile array


def make_conv(spec, rpu):
    cin, cout, k, s, p, d, bias, _, _ = spec
    torch.manual_seed(0)
    return AnalogConv2d(cin, cout, k, s, p, d, bias=bias, rpu_config=rpu)


def conv_input(spec, n=3, device="cpu"):
    cin, h, w = spec[0], spec[7], spec[8]
    torch.manual_seed(42)
    return torch.randn(n, cin, h, w).to(device)


# ----------------------------------------------------------------- im2col


@pytest.mark.parametrize("spec", CONVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_im2col_matches_unfold(spec, dtype):
    _, _, k, s, p, d, _, _, _ = spec
    k, s, p, d = (nn.modules.utils._pair(v) for v in (k, s, p, d))
    x = conv_input(spec).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = torch.nn.functional.unfold(xa, k, d, p, s)
    yb = im2col(xb, k, d, p, s)
    assert_same(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)


# ----------------------------------------------------------------- (a) PCM


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("spec", CONVS)
def test_conv_pcm_eval(spec, split, device):
    stock, acc = pair(lambda: programmed(make_conv(spec, pcm_config(*split))), device)
    assert is_accelerated(acc) and not is_accelerated(stock)
    x = conv_input(spec, device=device)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    # autograd (BN fine-tuning backpropagates through eval-mode analog layers)
    compare_fwd_bwd(stock, acc, x)


@pytest.mark.parametrize("device", DEVICES)
def test_all_zero_input_shortcut(device):
    """aihwkit returns zeros without drawing noise for an all-zero input; the
    accelerated path must give zeros and leave the RNG stream untouched."""
    spec = CONVS[0]
    stock, acc = pair(lambda: programmed(make_conv(spec, pcm_config())), device)
    x = torch.zeros(2, spec[0], spec[7], spec[8], device=device)
    after = []
    for mod in (stock, acc):
        with torch.no_grad():
            y = run(mod, x)
        after.append((y, torch.randn(5, device=device)))
    assert_same(after[0][0], after[1][0])
    assert torch.equal(after[0][1], after[1][1])


@pytest.mark.parametrize(
    "io",
    [
        dict(inp_noise=0.05),  # random numbers drawn on the (transposed) input layout
        dict(inp_sto_round=True, out_sto_round=True),
        dict(noise_management=NoiseManagementType.MAX, nm_thres=0.5),
        dict(out_bound=0.3),  # forces several bound-management rounds
        dict(out_asymmetry=0.1, inp_asymmetry=0.05, out_scale=2.0),
        dict(bound_management=BoundManagementType.NONE, out_noise=0.0),
        dict(is_perfect=True),
    ],
)
def test_conv_io_variants(io):
    spec = CONVS[1]
    stock, acc = pair(lambda: programmed(make_conv(spec, pcm_config(**io))))
    x = conv_input(spec)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    compare_fwd_bwd(stock, acc, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", SPLITS)
def test_frozen_analog_weights_bmm_path(split, device):
    """With tile weights not requiring grad, aihwkit's matmul takes bmm on the
    transposed patch matrix; the accelerated path must keep that layout."""
    spec = CONVS[0]
    stock, acc = pair(lambda: programmed(make_conv(spec, pcm_config(*split))), device)
    for mod in (stock, acc):
        for p in mod.parameters():
            p.requires_grad_(False)
    x = conv_input(spec, device=device)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))


# ----------------------------------------------------------------- (b) HWA


@pytest.mark.parametrize("split", [(512, 0), (20, 5)])
@pytest.mark.parametrize("spec", CONVS[:5])
def test_conv_hwa_train(spec, split):
    stock, acc = pair(lambda: make_conv(spec, hwa_config(*split)))
    stock.train()
    acc.train()
    x = conv_input(spec)
    for step in range(2):  # input ranges are initialised from data: stateful
        compare_fwd_bwd(stock, acc, x, seed=100 + step)
    # no-grad train-mode forward (e.g. BN statistics calibration)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))


def test_hwa_training_step_equal():
    spec = CONVS[1]
    stock, acc = pair(lambda: make_conv(spec, hwa_config()))
    x = conv_input(spec)
    for mod in (stock, acc):
        mod.train()
    from aihwkit.optim import AnalogSGD  # pylint: disable=import-outside-toplevel

    opts = [AnalogSGD(m.parameters(), lr=0.1) for m in (stock, acc)]
    for step in range(3):
        outs = []
        for mod, opt in zip((stock, acc), opts):
            opt.zero_grad()
            y = run(mod, x, seed=step)
            y.square().mean().backward()
            opt.step()
            outs.append(y.detach())
        assert_same(*outs)
    for (n, a), (_, b) in zip(stock.state_dict().items(), acc.state_dict().items()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), n


# ----------------------------------------------------------------- linear


@pytest.mark.parametrize("split", [(0, 0), (7, 4)])
@pytest.mark.parametrize("shape", [(5, 19), (2, 3, 19)])
def test_linear(split, shape):
    torch.manual_seed(0)
    stock, acc = pair(lambda: programmed(AnalogLinear(19, 9, bias=True, rpu_config=pcm_config(*split))))
    torch.manual_seed(1)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    compare_fwd_bwd(stock, acc, x)
    torch.manual_seed(0)
    stock, acc = pair(lambda: AnalogLinear(19, 9, bias=True, rpu_config=hwa_config(*split)))
    compare_fwd_bwd(stock.train(), acc.train(), x)


# ----------------------------------------------------------------- model level


def small_resnet_like() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1, 1, 0, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_model_pcm_eval_bn_grads():
    stock, acc = pair(lambda: programmed(convert_to_analog(small_resnet_like(), pcm_config())))
    report = acceleration_report(acc)
    assert set(report.values()) == {"accelerated"} and len(report) == 4
    torch.manual_seed(5)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    # BN fine-tuning: only BN params train; they get gradients through eval-mode analog layers
    for mod in (stock, acc):
        for layer in mod.modules():
            for p in layer.parameters(recurse=False):
                p.requires_grad_(isinstance(layer, nn.BatchNorm2d))
    trained = {n for n, p in acc.named_parameters() if p.requires_grad}
    assert trained and all(".weight" in n or ".bias" in n for n in trained)
    assert trained == {n for n, m in acc.named_modules() if isinstance(m, nn.BatchNorm2d)
                       for n in (f"{n}.weight", f"{n}.bias")}
    compare_fwd_bwd(stock, acc, x)
    # the frozen analog weights got no gradient, the BN parameters did
    assert all((p.grad is not None) == (n in trained) for n, p in acc.named_parameters())


def test_deepcopy_state_dict_train_eval_restore():
    stock = programmed(convert_to_analog(small_resnet_like(), pcm_config()))
    acc = accelerate(copy.deepcopy(stock))
    assert accelerate(acc) is acc  # idempotent
    assert list(acc.state_dict().keys()) == list(stock.state_dict().keys())

    chip = copy.deepcopy(acc)
    assert is_accelerated(chip)
    assert acceleration_report(chip) == acceleration_report(acc)
    assert is_speculative(chip) and not any(is_speculative(m) for m in list(chip.modules())[1:])
    for name, mod in chip.named_modules():
        fwd = mod.__dict__.get("forward")
        if fwd is not None:  # bound to the copy, not to the original (the root: the speculative forward)
            assert (fwd.model if name == "" else fwd.args[0]) is mod, name
    torch.manual_seed(5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_same(run(stock, x), run(chip, x))

    # train()/eval() propagate as usual
    chip.train()
    assert all(m.training for m in chip.modules())
    chip.eval()
    assert not any(m.training for m in chip.modules())

    # classes are untouched (convert_to_digital & co. keep working)
    assert [type(m) for m in chip.modules()] == [type(m) for m in stock.modules()]

    restore_stock(chip)
    assert not is_accelerated(chip) and not is_speculative(chip) and "forward" not in chip.__dict__
    assert set(acceleration_report(chip).values()) == {"stock: not accelerated"}
    assert list(chip.state_dict().keys()) == list(stock.state_dict().keys())
    with torch.no_grad():
        assert_same(run(stock, x), run(chip, x))

    # load_state_dict from a stock model into an accelerated one
    acc.load_state_dict(stock.state_dict())
    assert is_accelerated(acc)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))


# ----------------------------------------------------------------- fallback


def test_fallback_conv1d_stays_stock():
    torch.manual_seed(0)
    stock = AnalogConv1d(4, 6, 3, padding=1, rpu_config=pcm_config())
    acc = accelerate(copy.deepcopy(stock))
    assert not is_accelerated(acc)
    assert acceleration_report(acc)[""].startswith("stock:")
    x = torch.randn(2, 4, 10)
    with pytest.raises(ModuleError):  # aihwkit's own behaviour is kept
        stock(x)
    with pytest.raises(ModuleError):
        acc(x)


def test_fallback_other_torch_tiles():
    """Other torch tiles run aihwkit's own tile code: a linear layer on an
    IR-drop tile stays fully stock; a conv on a quantized-periphery tile keeps
    the exact im2col but its tile path is stock."""
    rpu = TorchInferenceRPUConfigIRDropT()
    rpu.forward.ir_drop = 1.0
    torch.manual_seed(0)
    lin_s, lin_a = pair(lambda: AnalogLinear(8, 4, rpu_config=rpu).eval())
    assert not is_accelerated(lin_a)
    assert acceleration_report(lin_a)[""].startswith("stock:")
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert_same(run(lin_s, x), run(lin_a, x))

    spec = CONVS[2]
    rpu = QuantizedTorchInferenceRPUConfig()
    conv_s, conv_a = pair(lambda: make_conv(spec, rpu).eval())
    assert acceleration_report(conv_a)[""].startswith("accelerated (im2col only")
    x = conv_input(spec, n=2)
    with torch.no_grad():
        assert_same(run(conv_s, x), run(conv_a, x))


def test_fallback_unbatched_and_hooks():
    spec = CONVS[0]
    stock, acc = pair(lambda: programmed(make_conv(spec, pcm_config())))
    x = conv_input(spec, n=1)[0]  # unbatched input -> stock path at run time
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    # a forward hook on a tile forces the tile through nn.Module.__call__
    calls = []
    hook = next(acc.analog_tiles()).register_forward_hook(lambda *a: calls.append(1))
    x = conv_input(spec)
    with torch.no_grad():
        assert_same(run(stock, x), run(acc, x))
    assert calls
    hook.remove()
