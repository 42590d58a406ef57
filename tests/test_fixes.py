"""Tests of aihwkit_nabn._aihwkit.input_range_fix: the learned input range's gradient vs a direct computation.

aihwkit 1.1.0 defines the gradient of a tile's learned input range ``r`` (``InputRangeForward``) as

    g = sum_{x_i >= r} min(d_i, 0) - sum_{x_i <= -r} max(d_i, 0)
    g *= r * gradient_scale                                  (gradient_relative only)
    g += decay * r * [mean(|clip(x_i, -r, r)| < r) > input_min_percentage]

with ``d_i = dL/d clip(x_i)``. For a tile whose MVM is exactly ``W @ clip(x, -r, r)`` (no
quantisation, noise or output bound) and a loss ``L = sum(g_out * y)``, ``d = g_out @ W``. These tests
write that out explicitly and compare autograd's gradient with it, for inputs inside, exactly on and
beyond the range, on aihwkit's stock layers and on accelerated ones.
"""

# pylint: disable=missing-function-docstring, redefined-outer-name

import copy

import pytest
import torch

from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

from aihwkit_nabn._aihwkit import accelerated as acceleration
from aihwkit_nabn._aihwkit import input_range_fix as fixes
from aihwkit_nabn._aihwkit import mvm
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset

torch.set_num_threads(min(2, torch.get_num_threads()))


def clamp_boundary_grad() -> float:
    """What torch's own clamp gives an input lying exactly on the bound (1 up to torch 2.13, 0 from 2.14)."""
    x = torch.ones(1, requires_grad=True)
    torch.clamp(x, -1.0, 1.0).backward()
    return float(x.grad)


OLD_CLAMP = clamp_boundary_grad() == 1.0


@pytest.fixture
def fix_state():
    """Restore the process-wide fix state (installed or not) after the test."""
    was = fixes.input_range_fix_status()["installed"]
    yield
    if was:
        fixes.apply_input_range_fix(force=True)
    else:
        fixes.remove_input_range_fix()


def exact_config(r: float, decay: float = 0.0, relative: bool = True, scale: float = 1.0,
                 min_pct: float = 0.95) -> TorchInferenceRPUConfig:
    """Torch-tile config whose MVM is exactly W @ clip(x, -r, r): only the input clamps act."""
    rpu = TorchInferenceRPUConfig()
    rpu.forward.is_perfect = False
    rpu.forward.inp_res = 0.0
    rpu.forward.out_res = 0.0
    rpu.forward.out_noise = 0.0
    rpu.forward.out_bound = 0.0
    rpu.forward.noise_management = NoiseManagementType.NONE
    rpu.forward.bound_management = BoundManagementType.NONE
    rpu.mapping.weight_scaling_omega = 0.0
    ir = rpu.pre_post.input_range
    ir.enable, ir.learn_input_range, ir.init_value, ir.init_from_data = True, True, r, 0
    ir.decay, ir.gradient_relative, ir.gradient_scale, ir.input_min_percentage = decay, relative, scale, min_pct
    return rpu


def direct_input_range_grad(x, r, d, decay=0.0, relative=True, scale=1.0, min_pct=0.95):
    """aihwkit's input-range gradient, computed directly in float64 (see the module docstring)."""
    x, d = x.double(), d.double()
    grad = d[x >= r].clamp(max=0.0).sum() - d[x <= -r].clamp(min=0.0).sum()
    if relative:
        grad = grad * r * scale
    inside = (x.clamp(-r, r).abs() < r).double().mean()
    if decay > 0:
        grad = grad + decay * r * float(inside > min_pct)
    return float(grad)


def probe_data(r: float, n_in: int = 12, n_out: int = 5, batch: int = 4):
    """Inputs with elements strictly inside, exactly on +-r and beyond; weights; upstream gradient."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_in, generator=gen) * r
    x[0, 0], x[1, 1], x[2, 2], x[3, 3] = r, -r, 3 * r, -4 * r  # on the bound and beyond it
    x[0, 4] = r
    w = torch.randn(n_out, n_in, generator=gen) * 0.3
    g = torch.randn(batch, n_out, generator=gen)
    return x, w, g


def run_linear(rpu, x, w, g, accelerated: bool):
    """Return (input_range.grad, x.grad, input range) of L = sum(g * layer(x))."""
    torch.manual_seed(0)
    layer = AnalogLinear(x.shape[1], w.shape[0], bias=False, rpu_config=rpu)
    layer.set_weights(w)
    if accelerated:
        acceleration.accelerate(layer)
    layer.eval()
    xr = x.clone().requires_grad_(True)
    (layer(xr) * g).sum().backward()
    tile = next(layer.analog_tiles())
    return tile.input_range.grad.clone(), xr.grad, float(tile.input_range.detach())


@pytest.mark.parametrize("accelerated", [False, True])
@pytest.mark.parametrize("kw", [
    dict(r=1.5), dict(r=0.75, decay=0.01, min_pct=0.5), dict(r=2.0, relative=False),
    dict(r=1.25, scale=0.5, decay=0.002, min_pct=0.3),
])
def test_fixed_gradient_matches_direct_computation(fix_state, accelerated, kw):
    fixes.apply_input_range_fix(force=True)
    r = kw["r"]
    x, w, g = probe_data(r)
    grad, x_grad, r_now = run_linear(exact_config(**kw), x, w, g, accelerated)
    assert r_now == r
    d = g @ w  # dL/d clip(x)
    expected = direct_input_range_grad(x, r, d, decay=kw.get("decay", 0.0), relative=kw.get("relative", True),
                                       scale=kw.get("scale", 1.0), min_pct=kw.get("min_pct", 0.95))
    assert float(grad) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # inputs strictly inside pass their gradient, inputs beyond the range get none
    inside, beyond = x.abs() < r, x.abs() > r
    assert torch.allclose(x_grad[inside], d[inside], rtol=1e-5, atol=1e-6)
    assert torch.all(x_grad[beyond] == 0)


@pytest.mark.skipif(OLD_CLAMP, reason="torch <= 2.13: clamp passes gradients on the bound, no bug")
@pytest.mark.parametrize("accelerated", [False, True])
def test_unfixed_gradient_is_wrong_on_torch_2_14(fix_state, accelerated):
    fixes.remove_input_range_fix()
    assert not fixes.input_range_gradient_is_correct(accelerated=accelerated)
    r = 1.5
    x, w, g = probe_data(r)
    grad, _, _ = run_linear(exact_config(r), x, w, g, accelerated)
    d = (g @ w).double()
    assert float(grad) != pytest.approx(direct_input_range_grad(x, r, d), rel=1e-3)
    # what autograd computes instead: the clipping term is lost and the uncancelled rest of the
    # x / r and * r scalings remains, sum over clipped inputs of d_i * sign(x_i)
    clipped = x.abs() >= r
    remainder = float((d[clipped] * x[clipped].sign().double()).sum())
    assert float(grad) == pytest.approx(remainder, rel=1e-5, abs=1e-6)


@pytest.mark.skipif(not OLD_CLAMP, reason="needs torch <= 2.13 (inclusive clamp gradient)")
def test_forced_fix_reproduces_stock_gradients_on_old_torch(fix_state):
    x, w, g = probe_data(1.5)
    fixes.remove_input_range_fix()
    stock = run_linear(exact_config(1.5), x, w, g, False)
    fixes.apply_input_range_fix(force=True)
    fixed = run_linear(exact_config(1.5), x, w, g, False)
    assert torch.equal(stock[0], fixed[0]) and torch.equal(stock[1], fixed[1])


def test_probe_matches_torch_clamp_semantics(fix_state):
    fixes.remove_input_range_fix()
    assert fixes.input_range_gradient_is_correct() == OLD_CLAMP
    status = fixes.apply_input_range_fix()
    assert status["installed"] == (not OLD_CLAMP)
    assert status["stock_correct"] and status["accelerated_correct"]
    assert fixes.input_range_gradient_is_correct()
    assert status["torch_clamp_boundary_grad"] == clamp_boundary_grad()
    assert status["torch"] == str(torch.__version__)


def test_apply_is_idempotent_and_remove_restores(fix_state):
    fixes.remove_input_range_fix()
    stock_prepare = AnalogMVM.__dict__["_prepare_input"]
    assert mvm.input_clamp() is mvm.stock_input_clamp
    first = fixes.apply_input_range_fix(force=True)
    # both seams swapped: the stock method and the accelerated mirror's input clamp
    prepare, clamp = AnalogMVM.__dict__["_prepare_input"], mvm.input_clamp()
    assert prepare is not stock_prepare and clamp is fixes.bound_clamp
    second = fixes.apply_input_range_fix(force=True)
    assert first == second and first["installed"]
    assert AnalogMVM.__dict__["_prepare_input"] is prepare and mvm.input_clamp() is clamp  # not wrapped twice
    fixes.remove_input_range_fix()
    fixes.remove_input_range_fix()
    assert not fixes.input_range_fix_status()["installed"]
    assert AnalogMVM.__dict__["_prepare_input"] is stock_prepare and mvm.input_clamp() is mvm.stock_input_clamp


def test_context_manager_installs_for_the_block_only(fix_state):
    fixes.remove_input_range_fix()
    stock_prepare = AnalogMVM.__dict__["_prepare_input"]
    with fixes.input_range_fix(force=True) as status:
        assert status["installed"] and fixes.input_range_fix_status()["installed"]
        assert fixes.input_range_gradient_is_correct()
    assert AnalogMVM.__dict__["_prepare_input"] is stock_prepare and mvm.input_clamp() is mvm.stock_input_clamp
    # a fix installed before the block stays installed after it
    fixes.apply_input_range_fix(force=True)
    with fixes.input_range_fix(force=True):
        pass
    assert fixes.input_range_fix_status()["installed"]
    # the block is undone on an exception too
    fixes.remove_input_range_fix()
    with pytest.raises(RuntimeError, match="inside"):
        with fixes.input_range_fix(force=True):
            raise RuntimeError("inside")
    assert not fixes.input_range_fix_status()["installed"]


def test_probe_leaves_random_state_alone():
    before = torch.get_rng_state()
    fixes.input_range_gradient_is_correct()
    assert torch.equal(before, torch.get_rng_state())


def hwa_conv() -> AnalogConv2d:
    rpu = TorchHWAPreset()
    rpu.mapping.max_input_size = 20  # a tile array
    rpu.pre_post.input_range.init_from_data = 1
    return AnalogConv2d(4, 6, 3, 1, 1, bias=True, rpu_config=rpu)


def fwd_bwd(layer, x, seed):
    torch.manual_seed(seed)
    xr = x.clone().requires_grad_(True)
    y = layer(xr)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), xr.grad, grads


def test_fix_keeps_forward_and_stock_accelerated_equality(fix_state):
    """HWA preset conv in training mode: the fix changes no forward value, and stock and
    accelerated layers stay bitwise identical, forward and backward."""
    x = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(1)) * 2
    torch.manual_seed(0)
    base = hwa_conv().train()
    layers = {}
    for name in ("unfixed", "stock", "accelerated"):
        layers[name] = copy.deepcopy(base)
    acceleration.accelerate(layers["accelerated"])
    fixes.remove_input_range_fix()
    y_unfixed, _, _ = fwd_bwd(layers["unfixed"], x, seed=5)
    fixes.apply_input_range_fix(force=True)
    y_stock, gx_stock, g_stock = fwd_bwd(layers["stock"], x, seed=5)
    y_acc, gx_acc, g_acc = fwd_bwd(layers["accelerated"], x, seed=5)
    assert torch.equal(y_unfixed, y_stock) and torch.equal(y_stock, y_acc)
    assert torch.equal(gx_stock, gx_acc)
    assert g_stock.keys() == g_acc.keys() and any("input_range" in k for k in g_stock)
    for name, grad in g_stock.items():
        assert torch.equal(grad, g_acc[name]), name


@pytest.mark.parametrize("accelerated", [False, True])
def test_hwa_preset_gradient_close_to_direct_computation(fix_state, accelerated):
    """With the HWA preset's 8-bit DAC/ADC (straight-through quantisation), the fixed gradient is the
    direct one up to the quantisation error; unfixed on torch >= 2.14 it loses the clipping term."""
    cfg = TorchHWAPreset()
    cfg.forward.out_noise = 0.0
    cfg.mapping.weight_scaling_omega = 0.0
    cfg.mapping.learn_out_scaling = False
    ir = cfg.pre_post.input_range
    ir.init_from_data, ir.init_value, ir.decay = 0, 1.5, 0.0
    x, w, g = probe_data(1.5, n_in=64, n_out=8, batch=16)
    expected = direct_input_range_grad(x, 1.5, g @ w)
    fixes.apply_input_range_fix(force=True)
    fixed, _, _ = run_linear(cfg, x, w, g, accelerated)
    assert float(fixed) == pytest.approx(expected, rel=0.01)
    if not OLD_CLAMP:
        fixes.remove_input_range_fix()
        unfixed, _, _ = run_linear(cfg, x, w, g, accelerated)
        assert abs(float(unfixed)) < 0.1 * abs(expected)
