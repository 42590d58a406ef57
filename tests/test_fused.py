"""Bitwise equivalence of the fused Triton path (aihwkit_nabn._aihwkit.fused) with aihwkit's stock layers.

CPU: Triton kernels under TRITON_INTERPRET=1 (tests/conftest.py sets it when no GPU is present).
CUDA: compiled kernels (run without TRITON_INTERPRET). Always fused-vs-stock on the same device.
"""

from __future__ import annotations

import copy

import pytest
import torch

from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn import AnalogConv2d, AnalogLinear, AnalogSequential
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import InputRangeParameter, MappingParameter, PrePostProcessingParameter
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType, WeightModifierType
from aihwkit.simulator.presets.utils import PresetIOParameters
from aihwkit.simulator.tiles.array import TileModuleArray

from aihwkit_nabn._aihwkit import fused as fused_analog
from aihwkit_nabn._aihwkit import input_range_fix as fix_module
from aihwkit_nabn._aihwkit.fused import STATS, fused_forward, fused_supported

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------- presets


def pcm_config(max_in: int = 512, max_out: int = 512, **fwd) -> TorchInferenceRPUConfig:
    rpu = TorchInferenceRPUConfig()
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.max_input_size = max_in
    rpu.mapping.max_output_size = max_out
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    for k, v in fwd.items():
        setattr(rpu.forward, k, v)
    return rpu


def hwa_config(max_in: int = 512, max_out: int = 0) -> TorchInferenceRPUConfig:
    """The settings of aihwkit_nabn's TorchHWAPreset (copied, not imported)."""
    rpu = TorchInferenceRPUConfig()
    rpu.mapping = MappingParameter(
        weight_scaling_omega=1.0,
        weight_scaling_columnwise=True,
        max_input_size=max_in,
        max_output_size=max_out,
        digital_bias=True,
        learn_out_scaling=True,
        out_scaling_columnwise=True,
    )
    rpu.forward = PresetIOParameters(
        inp_res=254.0,
        out_res=254.0,
        bound_management=BoundManagementType.NONE,
        noise_management=NoiseManagementType.CONSTANT,
        nm_thres=1.0,
        out_noise=0.04,
        out_bound=10.0,
    )
    rpu.noise_model = PCMLikeNoiseModel()
    rpu.drift_compensation = GlobalDriftCompensation()
    rpu.pre_post = PrePostProcessingParameter(
        input_range=InputRangeParameter(
            enable=True,
            init_value=3.0,
            init_from_data=100,
            init_std_alpha=3.0,
            decay=0.001,
            input_min_percentage=0.95,
            output_min_percentage=0.95,
            manage_output_clipping=False,
            gradient_scale=1.0,
            gradient_relative=True,
        )
    )
    rpu.modifier.type = WeightModifierType.ADD_NORMAL
    rpu.modifier.std_dev = 0.05
    rpu.modifier.rel_to_actual_wmax = True
    return rpu


def _deploy(layer: torch.nn.Module, t_drift: float = 3600.0 * 24 * 365, hwa: bool = False):
    layer = layer.to(DEVICE)
    layer.eval()
    if hwa:
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for tile in layer.analog_tiles():
                tile.input_range.data = (0.6 + torch.rand(1, generator=g)).to(DEVICE)
                if tile.out_scaling_alpha is not None:
                    osa = tile.out_scaling_alpha
                    osa.data = (0.5 + torch.rand(osa.shape, generator=g)).to(DEVICE)
    layer.program_analog_weights()
    layer.drift_analog_weights(t_drift)
    return layer


def conv(cin, cout, k, rpu, hwa=False, **kw) -> AnalogConv2d:
    torch.manual_seed(0)
    layer = AnalogConv2d(cin, cout, k, rpu_config=rpu, **kw)
    return _deploy(layer, hwa=hwa)


def linear(cin, cout, rpu, hwa=False, bias=True) -> AnalogLinear:
    torch.manual_seed(0)
    layer = AnalogLinear(cin, cout, bias=bias, rpu_config=rpu)
    return _deploy(layer, hwa=hwa)


# ------------------------------------------------------------------------------- helpers


def assert_bitwise(ref: torch.Tensor, out: torch.Tensor) -> None:
    assert ref.shape == out.shape and ref.dtype == out.dtype
    assert ref.stride() == out.stride(), (ref.stride(), out.stride())
    same = ref.view(torch.int32) == out.view(torch.int32)
    if not bool(same.all()):
        diff = (ref - out).abs()
        raise AssertionError(
            f"{int((~same).sum())} of {ref.numel()} elements differ, max |diff| {float(diff.max())}"
        )


def run_both(layer, x, seed=123, **kw):
    with torch.no_grad():
        torch.manual_seed(seed)
        ref = layer(x)
        ref_next = torch.randn(8, device=x.device)
        STATS.reset()
        torch.manual_seed(seed)
        out = fused_forward(layer, x, **kw)
        out_next = torch.randn(8, device=x.device)
    return ref, out, ref_next, out_next


def check(layer, x, seed=123, **kw):
    assert fused_supported(layer) is None or torch.is_grad_enabled()
    ref, out, ref_next, out_next = run_both(layer, x, seed, **kw)
    assert_bitwise(ref, out)
    assert torch.equal(ref_next, out_next), "random stream differs after the forward"
    return ref, out


def rand(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).to(DEVICE)


# ------------------------------------------------------------------------------- PCM preset


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, padding=1, bias=True),
        dict(kernel_size=3, padding=0, stride=2, dilation=2, bias=False),
        dict(kernel_size=1, stride=2, bias=True),
        dict(kernel_size=(3, 1), padding=(1, 0), stride=(1, 2), bias=True),
    ],
)
def test_pcm_conv(kw):
    k = kw.pop("kernel_size")
    layer = conv(4, 8, k, pcm_config(), **kw)
    check(layer, rand(2, 4, 7, 7))


@pytest.mark.parametrize("tune", [dict(prepad=False), dict(prepad=True), dict(in_single_max_k=4096),
                                  dict(in_block_k=16, prepad=False)])
def test_launch_options_do_not_change_numbers(tune):
    old = dict(fused_analog.TUNE)
    try:
        fused_analog.TUNE.update(tune)
        layer = conv(4, 8, 3, hwa_config(max_in=16), hwa=True, padding=1, stride=2, bias=True)
        check(layer, rand(2, 4, 7, 7, scale=2.0))
        layer = conv(4, 8, 3, pcm_config(), padding=(2, 1), dilation=(2, 1))
        check(layer, rand(2, 4, 7, 6))
    finally:
        fused_analog.TUNE.clear()
        fused_analog.TUNE.update(old)


def test_even_blocks_unmasked_path():
    """M and K multiples of the block sizes: the gather and the store run without masks."""
    layer = conv(16, 8, 3, pcm_config(), padding=1, bias=True)
    check(layer, rand(2, 16, 8, 8))
    layer = conv(16, 8, 3, hwa_config(), hwa=True, padding=1)
    check(layer, rand(2, 16, 8, 8, scale=2.0))


def test_pcm_conv_split_tiles():
    layer = conv(4, 8, 3, pcm_config(max_in=16, max_out=4), padding=1, bias=True)
    assert isinstance(layer.analog_module, TileModuleArray)
    assert layer.analog_module.analog_tile_count == 3 * 2
    check(layer, rand(2, 4, 6, 6))
    assert STATS.tiles == 6


def test_pcm_bound_management_triggers():
    layer = conv(4, 8, 3, pcm_config(max_in=16, out_bound=1.5), padding=1, bias=True)
    check(layer, rand(2, 4, 6, 6, scale=10.0))
    assert STATS.iterations > STATS.tiles, "bound management did not iterate"


def test_pcm_all_zero_input():
    layer = conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True)
    ref, _ = check(layer, torch.zeros(2, 4, 5, 5, device=DEVICE))
    assert STATS.zero_shortcuts == STATS.tiles == 3
    assert torch.unique(ref[:, 0]).numel() == 1  # zeros * scales + bias


def test_pcm_partly_zero_rows():
    x = rand(2, 4, 6, 6)
    x[0] = 0.0
    x[1, :, :2] = 0.0
    layer = conv(4, 8, 3, pcm_config(), padding=1, bias=True)
    check(layer, x)


def test_pcm_noncontiguous_input():
    layer = conv(4, 8, 3, pcm_config(), padding=1, bias=True)
    base = rand(2, 6, 9, 8)
    x = base[:, 1:5, ::2, 1:].contiguous(memory_format=torch.channels_last)[:, :, :, :6]
    assert not x.is_contiguous()
    check(layer, x)


def test_pcm_weight_without_grad_uses_bmm_layout():
    layer = conv(4, 8, 3, pcm_config(max_in=16), padding=1)
    for p in layer.parameters():
        p.requires_grad_(False)
    check(layer, rand(2, 4, 5, 5))


@pytest.mark.parametrize(
    "nm,thres,bm",
    [
        (NoiseManagementType.MAX, 0.0, BoundManagementType.ITERATIVE),
        (NoiseManagementType.ABS_MAX, 0.7, BoundManagementType.ITERATIVE),
        (NoiseManagementType.ABS_MAX, 0.0, BoundManagementType.NONE),
        (NoiseManagementType.NONE, 0.0, BoundManagementType.ITERATIVE),
        (NoiseManagementType.CONSTANT, 3.0, BoundManagementType.ITERATIVE),
        (NoiseManagementType.CONSTANT, 0.0, BoundManagementType.NONE),
    ],
)
def test_noise_and_bound_management_types(nm, thres, bm):
    rpu = pcm_config(max_in=16, noise_management=nm, nm_thres=thres, bound_management=bm, out_bound=4.0)
    layer = conv(4, 8, 3, rpu, padding=1, bias=True)
    check(layer, rand(2, 4, 5, 5, scale=2.0))


def test_pcm_linear_split():
    layer = linear(40, 12, pcm_config(max_in=16, max_out=8))
    check(layer, rand(6, 40))
    check(layer, rand(3, 5, 40))  # 3-D input (folded into one mm)


def test_pcm_linear_transposed_input():
    layer = linear(20, 6, pcm_config())
    x = rand(20, 7).t()  # column-major 2-D input: stock clones it with its strides
    check(layer, x)


def test_out_scale_and_no_quant():
    rpu = pcm_config(out_scale=1.7, inp_res=-1.0, out_res=-1.0, out_noise=0.0)
    layer = conv(3, 5, 3, rpu, padding=1, bias=True)
    check(layer, rand(2, 3, 5, 5))


# ------------------------------------------------------------------------------- HWA preset


def test_hwa_conv():
    layer = conv(4, 8, 3, hwa_config(), hwa=True, padding=1, bias=True)
    check(layer, rand(2, 4, 6, 6, scale=2.0), allow_sync=False)
    assert STATS.host_syncs == 0


def test_hwa_conv_split_strided():
    layer = conv(4, 8, 3, hwa_config(max_in=16, max_out=4), hwa=True, padding=2, stride=2, dilation=2)
    assert isinstance(layer.analog_module, TileModuleArray)
    check(layer, rand(2, 4, 7, 7, scale=2.0), allow_sync=False)
    assert STATS.host_syncs == 0


def test_hwa_zero_input_and_linear():
    layer = conv(4, 8, 1, hwa_config(), hwa=True, bias=True)
    check(layer, torch.zeros(2, 4, 4, 4, device=DEVICE), allow_sync=False)
    lin = linear(40, 10, hwa_config(max_in=16), hwa=True)
    check(lin, rand(5, 40, scale=2.0), allow_sync=False)


# ------------------------------------------------------------------------------- the tests can fail


def test_detects_one_ulp_in_output():
    layer = conv(4, 8, 3, pcm_config(), padding=1, bias=True)
    ref, out, _, _ = run_both(layer, rand(2, 4, 5, 5))
    assert_bitwise(ref, out)
    bad = out.clone()
    bad[1, 3, 2, 2] = torch.nextafter(bad[1, 3, 2, 2], torch.tensor(float("inf"), device=DEVICE))
    with pytest.raises(AssertionError):
        assert_bitwise(ref, bad)


def test_detects_one_ulp_in_a_scale():
    """A 1-ulp change of one learned out scale between the stock and the fused run is caught."""
    layer = conv(4, 8, 3, hwa_config(), hwa=True, padding=1, bias=True)
    x = rand(2, 4, 5, 5)
    with torch.no_grad():
        torch.manual_seed(5)
        ref = layer(x)
        tile = next(layer.analog_tiles())
        tile.out_scaling_alpha.data[3] = torch.nextafter(
            tile.out_scaling_alpha.data[3], torch.tensor(float("inf"), device=DEVICE)
        )
        torch.manual_seed(5)
        out = fused_forward(layer, x)
    with pytest.raises(AssertionError):
        assert_bitwise(ref, out)


def test_detects_other_rng_state():
    layer = conv(4, 8, 3, pcm_config(), padding=1)
    x = rand(2, 4, 5, 5)
    with torch.no_grad():
        torch.manual_seed(1)
        ref = layer(x)
        torch.manual_seed(2)
        out = fused_forward(layer, x)
    with pytest.raises(AssertionError):
        assert_bitwise(ref, out)


# ------------------------------------------------------------------------------- support checks


def test_supported_reasons():
    layer = conv(4, 8, 3, pcm_config(), padding=1)
    assert fused_supported(layer) is None  # grad enabled, parameters require grad: autograd path
    with torch.no_grad():
        assert fused_supported(layer) is None
        assert fused_supported(layer, rand(2, 4, 5, 5)) is None
        assert "dtype" in fused_supported(layer, rand(2, 4, 5, 5).double())
        layer.train()
        assert "training" in fused_supported(layer)
        layer.eval()
        noisy = conv(4, 8, 3, pcm_config(inp_noise=0.1), padding=1)
        assert "inp_noise" in fused_supported(noisy)
        with pytest.raises(ValueError):
            fused_forward(noisy, rand(2, 4, 5, 5))
    with torch.no_grad(), pytest.raises(RuntimeError):
        fused_forward(layer, rand(2, 4, 5, 5), allow_sync=False)  # iterative BM needs a sync


def test_deepcopy_layer_still_matches():
    layer = conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True)
    check(copy.deepcopy(layer), rand(2, 4, 5, 5))


def test_module_knows_interpreter_state():
    if DEVICE.type == "cpu":
        assert fused_analog._INTERPRET


# ------------------------------------------------------------------------------- building blocks

import triton  # noqa: E402  (after conftest set TRITON_INTERPRET)
import triton.language as tl  # noqa: E402


@triton.jit
def _probe_kernel(x_ptr, y_ptr, r_ptr, d_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    y = tl.load(y_ptr + offs, mask=m, other=1.0)
    tl.store(r_ptr + offs, fused_analog._rint(x), mask=m)
    tl.store(d_ptr + offs, tl.math.div_rn(x, y), mask=m)


def test_rint_and_div_rn_exact():
    special = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -0.3, 0.3, -0.0, 0.0, 8388607.5, -8388607.5,
               4194304.5, 8388608.0, 1e30, -1e30, float("inf"), float("-inf"), 62.5, -63.5, 1e-40]
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.tensor(special), torch.randn(2000, generator=g) * 100,
                   torch.randint(-300, 300, (500,), generator=g) / 2.0]).float().to(DEVICE)
    y = (torch.randn(x.numel(), generator=g) * 3).float().to(DEVICE)
    r = torch.empty_like(x)
    d = torch.empty_like(x)
    kw = {} if fused_analog._INTERPRET else {"enable_fp_fusion": False}
    _probe_kernel[(1,)](x, y, r, d, x.numel(), BLOCK=4096, **kw)
    assert_bitwise(torch.round(x), r)
    assert_bitwise(x / y, d)


def test_aten_scalar_division_rule():
    """The assumption behind RECIP_DIV: on CUDA ATen computes tensor / python_float as
    tensor * fp32(1 / float) (reciprocal of the double scalar), on CPU as a true division."""
    g = torch.Generator().manual_seed(4)
    t = (torch.randn(200000, generator=g) * 50).to(DEVICE)
    res = (1 / 126) * 2.0
    inv = fused_analog._recip_f32(res)
    if DEVICE.type == "cuda":
        assert_bitwise(t / res, t * inv)
        assert inv == 63.0  # fp32(1 / res) of the double res; fp32(1) / fp32(res) = 62.999996
    else:
        assert_bitwise(t / res, (t.double() / torch.tensor(res, dtype=torch.float32).double()).float())
    assert not torch.equal(t * inv, (t.double() / torch.tensor(res, dtype=torch.float32).double()).float())


def test_fused_does_not_call_stock_mvm(monkeypatch):
    from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

    layer = conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True)
    x = rand(2, 4, 5, 5)
    with torch.no_grad():
        torch.manual_seed(9)
        ref = layer(x)

        def boom(*a, **k):
            raise AssertionError("stock AnalogMVM.matmul called")

        monkeypatch.setattr(AnalogMVM, "matmul", classmethod(boom))
        torch.manual_seed(9)
        out = fused_forward(layer, x)
    assert_bitwise(ref, out)


# ------------------------------------------------------------------------------- model level


def small_net(rpu, hwa=False):
    torch.manual_seed(0)
    net = AnalogSequential(
        AnalogConv2d(3, 8, 3, padding=1, rpu_config=rpu),
        torch.nn.ReLU(),
        AnalogConv2d(8, 8, 3, padding=1, stride=2, rpu_config=rpu),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        AnalogLinear(8 * 3 * 3, 5, rpu_config=rpu),
    )
    return _deploy(net, hwa=hwa)


def run_model_both(net, x, seed=5, spec=True):
    with torch.no_grad():
        fused_analog.uninstall(net)
        torch.manual_seed(seed)
        ref = net(x)
        ref_next = torch.randn(8, device=x.device)
        (fused_analog.speculative if spec else fused_analog.install)(net)
        STATS.reset()
        torch.manual_seed(seed)
        out = net(x)
        out_next = torch.randn(8, device=x.device)
        fused_analog.uninstall(net)
    assert_bitwise(ref, out)
    assert torch.equal(ref_next, out_next)


def test_speculative_model_no_rerun():
    net = small_net(pcm_config(max_in=32))
    run_model_both(net, rand(2, 3, 6, 6))
    assert STATS.spec_forwards == 1 and STATS.spec_reruns == 0 and STATS.host_syncs == 1


def test_speculative_model_rerun_on_bound_management():
    net = small_net(pcm_config(max_in=32, out_bound=1.0))
    run_model_both(net, rand(2, 3, 6, 6, scale=5.0))
    assert STATS.spec_reruns == 1 and STATS.iterations > 2 * STATS.spec_forwards


def test_speculative_model_rerun_on_zero_input():
    net = small_net(pcm_config(max_in=32))
    run_model_both(net, torch.zeros(2, 3, 6, 6, device=DEVICE))
    assert STATS.spec_reruns == 1 and STATS.zero_shortcuts >= 1


def test_speculative_hwa_model_is_sync_free():
    net = small_net(hwa_config(max_in=32), hwa=True)
    run_model_both(net, rand(2, 3, 6, 6, scale=2.0))
    assert STATS.host_syncs == 0


def test_plan_cache_follows_config_changes():
    layer = conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True)
    x = rand(2, 4, 5, 5)
    check(layer, x)
    for tile in layer.analog_tiles():
        tile.rpu_config.forward.out_noise = 0.3  # on-the-fly change (aihwkit's set_config)
    check(layer, x)
    layer.drift_analog_weights(1000.0)  # new drift-compensation alpha tensors
    check(layer, x)
    assert STATS.plan_builds == 1


# ------------------------------------------------------------------------------- window abs-max (PCM input side)


def assert_bitwise_nan(ref: torch.Tensor, out: torch.Tensor) -> None:
    """Bitwise equal except that NaNs only need to sit at the same places (payloads may differ)."""
    assert ref.shape == out.shape and ref.stride() == out.stride()
    rn, on = torch.isnan(ref), torch.isnan(out)
    assert torch.equal(rn, on), "NaN positions differ"
    assert_bitwise(torch.where(rn, 0.0, ref), torch.where(on, 0.0, out))


@pytest.mark.parametrize("max_in", [512, 36])
def test_window_absmax_matches(max_in):
    """ABS_MAX from the channel abs-max map: whole-channel tiles (72 = 2 x 36), padding, stride."""
    layer = conv(8, 8, 3, pcm_config(max_in=max_in), padding=1, stride=2, bias=True)
    x = rand(2, 8, 7, 7)
    x[0, :, 0, :] = 0.0  # rows whose max sits in the padding / is zero
    check(layer, x)
    assert STATS.window_tiles == STATS.tiles and STATS.tiles >= 1


def test_window_absmax_special_values():
    """-0.0 (abs -> +0.0), +-inf and a fully negative-zero image behave as abs().max()."""
    layer = conv(4, 8, 3, pcm_config(out_bound=0.0, out_res=-1.0), padding=1, bias=True)
    x = rand(2, 4, 6, 6)
    x[0] = -0.0
    x[1, 2, 3, 3] = float("inf")
    x[1, 1, 0, 5] = float("-inf")
    with torch.no_grad():
        torch.manual_seed(3)
        ref = layer(x)
        STATS.reset()
        torch.manual_seed(3)
        out = fused_forward(layer, x)
    assert STATS.window_tiles == STATS.iterations >= 1
    assert_bitwise_nan(ref, out)
    x = rand(2, 4, 6, 6)
    x[1, 0, 2, 2] = float("nan")
    with torch.no_grad():
        torch.manual_seed(3)
        ref = layer(x)
        torch.manual_seed(3)
        out = fused_forward(layer, x)
    assert_bitwise_nan(ref, out)


def test_window_absmax_with_input_range():
    """A learned input range (clip + divide, monotone in |x|) in front of ABS_MAX; negative range."""
    rpu = hwa_config()
    rpu.forward.noise_management = NoiseManagementType.ABS_MAX
    rpu.forward.nm_thres = 0.0
    layer = conv(4, 8, 3, rpu, hwa=True, padding=1, bias=True)
    x = rand(2, 4, 6, 6, scale=2.0)
    check(layer, x)
    assert STATS.window_tiles == 1
    with torch.no_grad():
        next(layer.analog_tiles()).input_range.data.neg_()
    check(layer, x)


def test_window_off_same_numbers():
    old = dict(fused_analog.TUNE)
    try:
        layer = conv(4, 8, 3, pcm_config(), padding=1, bias=True)
        x = rand(2, 4, 6, 6)
        fused_analog.TUNE["nm_window"] = False
        check(layer, x)
        assert STATS.window_tiles == 0
    finally:
        fused_analog.TUNE.clear()
        fused_analog.TUNE.update(old)


# ------------------------------------------------------------------------------- backward (gradients)


def _grad_out(shape, seed=17, layout=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g).to(DEVICE)
    if layout == "cl":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def run_grad_both(layer, x, seed=123, layout=None, loss="dot", fwd=None):
    """Stock and fused forward + backward from the same RNG state: outputs, input gradient,
    every parameter's gradient and the random stream afterwards."""
    fwd = fwd or fused_forward
    params = [p for p in layer.parameters() if p.requires_grad]
    res = []
    for run in (lambda m, t: m(t), fwd):
        for p in params:
            p.grad = None
        xg = x.detach().clone().requires_grad_(x.requires_grad)
        torch.manual_seed(seed)
        out = run(layer, xg)
        if loss == "sum":
            out.sum().backward()
        else:
            out.backward(_grad_out(out.shape, layout=layout))
        nxt = torch.randn(8, device=x.device)
        res.append((out.detach(), xg.grad, [None if p.grad is None else p.grad.clone() for p in params], nxt))
    return res


def check_grad(layer, x, **kw):
    (ro, rg, rp, rn), (fo, fg, fp, fn) = run_grad_both(layer, x, **kw)
    assert_bitwise(ro, fo)
    if x.requires_grad:
        assert rg is not None and fg is not None
        assert_bitwise(rg, fg)
    for a, b in zip(rp, fp):
        assert (a is None) == (b is None)
        if a is not None:
            assert_bitwise(a, b)
    assert torch.equal(rn, fn), "random stream differs after forward + backward"
    return rg, rp


def frozen(layer):
    for p in layer.parameters():
        p.requires_grad_(False)
    return layer


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, dilation=2, padding=2),
                                dict(kernel_size=1, stride=2)])
def test_grad_pcm_bn_finetune(kw):
    """(a) eval tiles, frozen analog parameters, gradient to the input only (PCM: ABS_MAX + BM)."""
    k = kw.pop("kernel_size")
    layer = frozen(conv(8, 8, k, pcm_config(), bias=True, **kw))
    x = rand(2, 8, 7, 7).requires_grad_()
    STATS.reset()
    check_grad(layer, x)
    assert STATS.tiles == 1


def test_grad_pcm_split_tiles_and_layouts():
    layer = frozen(conv(4, 8, 3, pcm_config(max_in=16, max_out=4), padding=1, bias=True))
    x = rand(2, 4, 6, 6).requires_grad_()
    check_grad(layer, x)
    check_grad(layer, x, layout="cl")
    check_grad(layer, x, loss="sum")  # expanded (stride-0) output gradient


def test_grad_pcm_bound_management_and_thres():
    rpu = pcm_config(max_in=16, out_bound=1.5, nm_thres=0.8)
    layer = frozen(conv(4, 8, 3, rpu, padding=1, bias=True))
    x = rand(2, 4, 6, 6, scale=5.0).requires_grad_()
    STATS.reset()
    check_grad(layer, x)
    assert STATS.iterations > STATS.tiles


def test_grad_pcm_zero_rows_ties_and_max_mode():
    x = rand(2, 4, 6, 6)
    x[0, :, :3] = 0.0  # all-zero rows (nm -> 1, no max gradient)
    x[1, 1, 2, 2] = -x[1, 0, 2, 2]  # ties of |x| inside a row: lowest index gets the max gradient
    x[1, 2, 4, 4] = x[1, 2, 4, 3]
    layer = frozen(conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True))
    check_grad(layer, x.clone().requires_grad_())
    rpu = pcm_config(noise_management=NoiseManagementType.MAX)
    layer = frozen(conv(4, 8, 3, rpu, padding=1, bias=True))
    check_grad(layer, x.clone().requires_grad_())


def test_grad_all_zero_input():
    layer = frozen(conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True))
    x = torch.zeros(2, 4, 5, 5, device=DEVICE, requires_grad=True)
    out = fused_forward(layer, x)
    ref = layer(x)
    assert out.requires_grad == ref.requires_grad
    x2 = torch.zeros(2, 4, 5, 5, device=DEVICE)
    x2[0, 0, 0, 0] = 1.0  # one non-zero tile row, the others shortcut
    check_grad(layer, x2.requires_grad_())


def test_grad_hwa_bn_finetune():
    layer = frozen(conv(4, 8, 3, hwa_config(max_in=16), hwa=True, padding=1, bias=True))
    x = rand(2, 4, 6, 6, scale=2.0).requires_grad_()
    check_grad(layer, x)
    check_grad(layer, x, layout="cl")


def test_grad_linear():
    lin = frozen(linear(40, 12, pcm_config(max_in=16, max_out=8)))
    check_grad(lin, rand(6, 40).requires_grad_())
    lin = frozen(linear(40, 10, hwa_config(max_in=16), hwa=True))
    check_grad(lin, rand(5, 40, scale=2.0).requires_grad_())


def test_grad_eval_all_parameters():
    """Eval tiles with every parameter requiring grad (weight hook, input range, out scaling, biases)."""
    layer = conv(4, 8, 3, hwa_config(max_in=16), hwa=True, padding=1, bias=True)
    x = rand(2, 4, 6, 6, scale=2.0).requires_grad_()
    _, rp = check_grad(layer, x)
    names = [n for n, p in layer.named_parameters() if p.requires_grad]
    got = {n.split(".")[-1] for n, g in zip(names, rp) if g is not None}
    assert got == {"bias", "out_scaling_alpha", "input_range", "weight"}, got
    layer = conv(4, 8, 3, pcm_config(max_in=16, max_out=4), padding=1, bias=True)
    check_grad(layer, rand(2, 4, 6, 6).requires_grad_())


def _train_ready(layer):
    layer.train()
    for tile in layer.analog_tiles():
        if tile.input_range is not None:
            tile.input_range_update_idx.data.fill_(1000.0)  # past init_from_data
    return layer


def test_grad_hwa_training_mode():
    """(b) HWA training: train-mode tiles (weight modifier drawn by aihwkit, same stream),
    learned input range and out scaling, all parameters requiring grad."""
    layer = _train_ready(conv(4, 8, 3, hwa_config(max_in=16), hwa=True, padding=1, bias=True))
    assert fused_supported(layer, rand(2, 4, 6, 6)) is None
    x = rand(2, 4, 6, 6, scale=2.0).requires_grad_()
    check_grad(layer, x)
    lin = _train_ready(linear(40, 10, hwa_config(max_in=16), hwa=True))
    check_grad(lin, rand(5, 40, scale=2.0).requires_grad_())


def test_grad_training_input_range_init_falls_back():
    layer = conv(4, 8, 3, hwa_config(), hwa=True, padding=1)
    layer.train()
    assert "initialised from data" in fused_supported(layer, rand(2, 4, 5, 5))


def test_grad_detects_wrong_gradient():
    """A 1-ulp change of the upstream gradient changes the input gradient: the check can fail."""
    layer = frozen(conv(4, 8, 3, pcm_config(), padding=1, bias=True))
    x = rand(2, 4, 5, 5).requires_grad_()
    (_, rg, _, _), (_, fg, _, _) = run_grad_both(layer, x)
    assert_bitwise(rg, fg)
    x2 = x.detach().clone().requires_grad_()
    torch.manual_seed(123)
    out = fused_forward(layer, x2)
    gout = _grad_out(out.shape)
    gout[0, 0, 2, 2] = torch.nextafter(gout[0, 0, 2, 2], torch.tensor(float("inf"), device=DEVICE))
    out.backward(gout)
    with pytest.raises(AssertionError):
        assert_bitwise(rg, x2.grad)


@pytest.fixture
def input_range_fix():
    """The project's input-range gradient fix, installed for the test (force: on any torch)."""
    with fix_module.input_range_fix(force=True):
        yield
    fused_analog._RULES_CACHE.clear()


def test_grad_with_input_range_fix(input_range_fix):
    """The project's fix installed: the probe sees the inclusive MVM clamp rule, and the input
    range's InputRangeForward term is non-zero (clipped inputs keep their gradient)."""
    rules, why = fused_analog._grad_rules()
    assert why is None and rules["mvm_incl"] is True
    layer = _train_ready(conv(4, 8, 3, hwa_config(max_in=16), hwa=True, padding=1, bias=True))
    x = rand(2, 4, 6, 6, scale=3.0).requires_grad_()
    check_grad(layer, x)
    layer.eval()
    check_grad(layer, x)
    layer = frozen(conv(4, 8, 3, pcm_config(max_in=16), padding=1, bias=True))
    check_grad(layer, rand(2, 4, 6, 6).requires_grad_())


def test_grad_three_out_tiles_order():
    """Three out-tiles share one in-split: their input gradients are summed in autograd's order."""
    layer = frozen(conv(4, 9, 3, pcm_config(max_in=512, max_out=3), padding=1, bias=True))
    assert len(layer.analog_module.array[0]) == 3
    check_grad(layer, rand(2, 4, 6, 6).requires_grad_())
    layer = frozen(conv(4, 9, 3, hwa_config(max_out=3), hwa=True, padding=1, bias=True))
    check_grad(layer, rand(2, 4, 6, 6, scale=2.0).requires_grad_())


def test_grad_inputs_exactly_on_the_input_range(input_range_fix):
    """Inputs exactly at +-r: the clip's gradient rule at the bound (torch version dependent)."""
    layer = conv(4, 8, 3, hwa_config(), hwa=True, padding=1, bias=True)
    r = float(next(layer.analog_tiles()).input_range.detach().abs().cpu())
    x = rand(2, 4, 6, 6, scale=0.3)
    x[0, 0, 1, 1], x[1, 2, 3, 3], x[1, 3, 0, 0] = r, -r, r
    check_grad(frozen(layer), x.clone().requires_grad_())


def bn_net(rpu, hwa=False):
    torch.manual_seed(0)
    net = AnalogSequential(
        torch.nn.BatchNorm2d(3),
        AnalogConv2d(3, 8, 3, padding=1, rpu_config=rpu),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        AnalogConv2d(8, 8, 3, padding=1, stride=2, rpu_config=rpu),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        AnalogLinear(8 * 3 * 3, 5, rpu_config=rpu),
    )
    net = _deploy(net, hwa=hwa)
    for p in net.parameters():
        p.requires_grad_(False)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
            mod.weight.requires_grad_(True)
            mod.bias.requires_grad_(True)
    return net


@pytest.mark.parametrize("preset", ["pcm", "hwa"])
def test_model_bn_finetune_gradients(preset):
    """(a) at model level: install(), eval tiles, only BN parameters learn; every BN gradient and
    the random stream afterwards are stock's."""
    net = bn_net(pcm_config(max_in=32) if preset == "pcm" else hwa_config(max_in=32), hwa=preset == "hwa")
    x = rand(2, 3, 6, 6, scale=2.0)
    bn = [p for p in net.parameters() if p.requires_grad]
    res = []
    for fused in (False, True):
        (fused_analog.install if fused else fused_analog.uninstall)(net)
        for p in bn:
            p.grad = None
        STATS.reset()
        torch.manual_seed(4)
        out = net(x)
        assert STATS.tiles == (7 if fused else 0)  # 1 + 3 + 3 tiles (max_in 32)
        (out * _grad_out(out.shape)).sum().backward()
        res.append((out.detach(), [p.grad.clone() for p in bn], torch.randn(8, device=DEVICE)))
    fused_analog.uninstall(net)
    assert_bitwise(res[0][0], res[1][0])
    for a, b in zip(res[0][1], res[1][1]):
        assert_bitwise(a, b)
    assert torch.equal(res[0][2], res[1][2])


# ------------------------------------------------------------------------------- in the package


def test_accelerated_layers_use_the_fused_path_on_cuda_only():
    """On the CPU the accelerated layers run the exact torch path (the interpreter is only for these tests)."""
    import aihwkit_nabn as nb  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    model = nb.to_analog(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                             torch.nn.Flatten(), torch.nn.Linear(8 * 36, 4)))
    from aihwkit_nabn._aihwkit.accelerated import fused_enabled, fused_report, set_fused  # noqa: E501  pylint: disable=import-outside-toplevel

    report = fused_report(model)
    assert set(report) == {"0", "3"} and all(v is None for v in report.values()), report  # PCM preset: covered
    x = torch.randn(2, 3, 6, 6)
    STATS.reset()
    with torch.no_grad():
        model(x)
    assert STATS.tiles == 0  # CPU tensors never reach the kernels
    assert fused_enabled()
    set_fused(False)
    try:
        assert not fused_enabled()
    finally:
        set_fused(True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the package dispatches to the fused kernels on CUDA only")
@pytest.mark.parametrize("preset", ["pcm", "hwa"])
def test_package_path_on_cuda_matches_stock_forward_and_bn_gradients(preset):
    import aihwkit_nabn as nb  # pylint: disable=import-outside-toplevel
    from aihwkit_nabn._aihwkit.accelerated import set_fused  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    digital = nb.create_model("resnet20").eval()
    config = nb.PCMInferencePreset() if preset == "pcm" else nb.TorchHWAPreset()
    stock = nb.Chip(nb.to_analog(digital, config, accelerate=False), seed=0, device="cuda").drift_to(3e7).model
    fused = nb.Chip(nb.to_analog(digital, config), seed=0, device="cuda").drift_to(3e7).model
    x = torch.randn(16, 3, 32, 32, device="cuda")
    outs = []
    for model in (stock, fused):
        torch.manual_seed(5)
        with torch.no_grad():
            outs.append(model(x))
    STATS.reset()
    torch.manual_seed(5)
    with torch.no_grad():
        fused(x)
    assert STATS.tiles > 0 and torch.equal(outs[0], outs[1])
    grads = []
    for model in (stock, fused):
        with nb.freeze_all_but_bn(model) as frozen:
            torch.manual_seed(6)
            model(x).square().mean().backward()
            grads.append([p.grad.clone() for p in frozen.parameters])
            for p in frozen.parameters:
                p.grad = None
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    set_fused(False)
    try:
        torch.manual_seed(5)
        with torch.no_grad():
            assert torch.equal(fused(x), outs[0])  # the torch path, too
    finally:
        set_fused(True)
