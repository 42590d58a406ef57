"""Exact acceleration of aihwkit's pure-PyTorch analog forward pass.

aihwkit's ``TorchInferenceRPUConfig`` layers spend most of their time in work
that is *not* physics:

* ``AnalogConv2d.forward`` builds its patch matrix with
  ``torch.nn.functional.unfold``; ATen's ``im2col`` runs one kernel per image
  (16,896 launches per ResNet-32 forward at batch 512 on CUDA), and its
  backward (``col2im``) does the same.
* ``AnalogMVM`` clones full activation tensors that are immediately replaced
  (``_prepare_input`` and ``UniformQuantize`` each start with ``clone()``),
  materialises ``abs()`` before a max-reduction, uses boolean-mask indexing
  (a host sync on CUDA) to replace zero noise-management scales, computes the
  bound-management clipping test even when bound management is off, and lets
  ``matmul`` make one more contiguous copy of the transposed patch matrix.

This module re-lays-out that work without changing a single arithmetic
operation, so the accelerated forward is **bitwise identical** to aihwkit's:

* im2col is one ``pad`` + one strided-view copy producing exactly ATen's
  ``[N, C*kh*kw, L]`` contiguous tensor. Its backward accumulates the kh*kw
  patch gradients with whole-batch strided adds in exactly the order ATen's
  ``col2im`` uses (ascending kernel offsets on CPU, descending on CUDA, both
  starting from zero), so input gradients are bitwise identical too. For
  dtypes where ATen's CUDA ``col2im`` accumulates in a wider type (half,
  bfloat16) the backward calls ``torch.nn.functional.fold`` itself.
* Without autograd (inference), when the tile configuration makes the patch
  matrix layout irrelevant (no learned input range, no input noise, weights
  requiring grad so that ATen's ``matmul`` would copy the patch matrix
  contiguous and call ``mm`` anyway), the patch matrix is built directly as a
  contiguous ``[N, L, K]`` tensor, removing the transposing copy before the
  GEMM. On CUDA the all-zero-input test and the first bound-management test
  are read back with one host sync instead of three.
* The tile / MVM path mirrors ``TorchInferenceTile.forward`` ->
  ``TorchSimulatorTile.forward`` -> ``AnalogMVM.matmul`` branch for branch,
  calling the tile's own ``pre_forward``/``post_forward``/``apply_out_scaling``
  methods (input ranges, mapping scales, drift compensation, learned output
  scales, digital bias) and aihwkit's own ``modify_weight``; random numbers are
  drawn in the same order with the same shapes/layouts. Only redundant copies
  are removed; in-place variants and single-pass reductions are used only when
  autograd is disabled (``torch.no_grad()`` / ``inference_mode``).

Mechanism: :func:`accelerate` stores a per-instance ``forward`` (a
``functools.partial`` of a module-level function) in the layer's ``__dict__``.
No aihwkit class is patched and the layer keeps its class, so ``isinstance``,
``type(m) in conversion_map`` (``convert_to_digital``), ``state_dict`` keys,
``train()/eval()`` and hooks are unchanged; ``copy.deepcopy`` and pickling
re-bind the partial to the copy. Un-accelerated models keep aihwkit's own
behaviour. :func:`restore_stock` deletes the instance attribute.

Anything the fast path does not know exactly (other tile classes, tile
subclasses, a custom ``AnalogMVM``, indexed convolutions, unbatched inputs,
module hooks on tiles) is run through aihwkit's stock code, per layer and
per call; :func:`acceleration_report` says which layers are accelerated and why
not.

Caveat: ``torch.nn.DataParallel`` replicas copy ``__dict__`` shallowly, so an
accelerated layer's replica would call the original layer; call
:func:`restore_stock` before wrapping a model in ``DataParallel`` (DDP is fine).
"""

from __future__ import annotations

import functools
from numbers import Number
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.nn import Module
from torch.nn.modules import module as _torch_module

from aihwkit.nn.modules.base import AnalogLayerBase
from aihwkit.nn.modules.conv import AnalogConv2d
from aihwkit.nn.modules.linear import AnalogLinear
from aihwkit.simulator.parameters.enums import (
    AnalogMVType,
    BoundManagementType,
    NoiseManagementType,
    WeightModifierType,
)
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
from aihwkit.simulator.tiles.array import TileModuleArray
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile

__all__ = [
    "accelerate",
    "restore_stock",
    "is_accelerated",
    "acceleration_report",
    "im2col",
]

_REPORT_ATTR = "_nabn_acceleration"
ACCELERATED = "accelerated"

# --------------------------------------------------------------------------
# im2col
# --------------------------------------------------------------------------


def _padded_patch_geometry(x: Tensor, ks, dil, pad, st):
    """Return ``(padded x, output height, output width)`` of a 2-D patch extraction."""
    _, _, h, w = x.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = ks, dil, pad, st
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    return xp, oh, ow


def _im2col_forward(x: Tensor, ks, dil, pad, st) -> Tensor:
    n, c, _, _ = x.shape
    (kh, kw), (dh, dw), (sh, sw) = ks, dil, st
    xp, oh, ow = _padded_patch_geometry(x, ks, dil, pad, st)
    s_n, s_c, s_h, s_w = xp.stride()
    view = xp.as_strided(
        (n, c, kh, kw, oh, ow),
        (s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
        xp.storage_offset(),
    )
    out = torch.empty((n, c, kh, kw, oh, ow), dtype=x.dtype, device=x.device)
    out.copy_(view)  # one kernel for the whole batch
    return out.view(n, c * kh * kw, oh * ow)


def _col2im_backward(grad: Tensor, in_shape, ks, dil, pad, st) -> Tensor:
    """Exactly ATen's ``col2im`` summation order, done batch-wide."""
    n, c, h, w = in_shape
    kh, kw = ks
    dh, dw = dil
    ph, pw = pad
    sh, sw = st
    if grad.dtype not in (torch.float32, torch.float64) or grad.device.type not in ("cpu", "cuda"):
        return torch.nn.functional.fold(
            grad, (h, w), kernel_size=ks, dilation=dil, padding=pad, stride=st
        )
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    g6 = grad.reshape(n, c, kh, kw, oh, ow)
    gp = torch.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype, device=grad.device)
    # CPU col2im adds kernel offsets in ascending (kh, kw) order; the CUDA
    # kernel loops over output positions ascending, i.e. kernel offsets
    # descending. Both accumulate from zero in the tensor's dtype (fp32/fp64).
    order = [(i, j) for i in range(kh) for j in range(kw)]
    if grad.device.type == "cuda":
        order.reverse()
    for i, j in order:
        r0, c0 = i * dh, j * dw
        gp[:, :, r0 : r0 + sh * (oh - 1) + 1 : sh, c0 : c0 + sw * (ow - 1) + 1 : sw].add_(
            g6[:, :, i, j]
        )
    if ph or pw:
        gp = gp[:, :, ph : ph + h, pw : pw + w]
    return gp


class _Im2Col(Function):
    # pylint: disable=abstract-method, arguments-differ

    @staticmethod
    def forward(ctx: Any, x: Tensor, ks, dil, pad, st) -> Tensor:  # type: ignore[override]
        ctx.params = (tuple(x.shape), ks, dil, pad, st)
        return _im2col_forward(x, ks, dil, pad, st)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        in_shape, ks, dil, pad, st = ctx.params
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        return _col2im_backward(grad, in_shape, ks, dil, pad, st), None, None, None, None


def _im2col_patch_major(x: Tensor, ks, dil, pad, st) -> Tensor:
    """``unfold(x).transpose(-1, -2)`` materialised contiguous: ``[N, L, K]``."""
    n, c, _, _ = x.shape
    (kh, kw), (dh, dw), (sh, sw) = ks, dil, st
    xp, oh, ow = _padded_patch_geometry(x, ks, dil, pad, st)
    s_n, s_c, s_h, s_w = xp.stride()
    view = xp.as_strided(
        (n, oh, ow, c, kh, kw),
        (s_n, sh * s_h, sw * s_w, s_c, dh * s_h, dw * s_w),
        xp.storage_offset(),
    )
    out = torch.empty((n, oh, ow, c, kh, kw), dtype=x.dtype, device=x.device)
    out.copy_(view)
    return out.view(n, oh * ow, c * kh * kw)


def im2col(x: Tensor, kernel_size, dilation, padding, stride) -> Tensor:
    """Drop-in for ``torch.nn.functional.unfold`` on 4-D input (bitwise equal,
    same layout, bitwise-equal backward for fp32/fp64)."""
    args = (tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride))
    if torch.is_grad_enabled() and x.requires_grad:
        return _Im2Col.apply(x, *args)
    return _im2col_forward(x, *args)


# --------------------------------------------------------------------------
# Analog MVM (mirror of aihwkit.simulator.tiles.analog_mvm.AnalogMVM)
# --------------------------------------------------------------------------


class _UQ(Function):
    """``UniformQuantize`` without its redundant leading ``clone()``."""

    # pylint: disable=abstract-method, arguments-differ

    @staticmethod
    def forward(ctx: Any, inp: Tensor, res: float, bound: float, stochastic: bool = False):  # type: ignore[override]
        res = 1 / res if res > 1.0 else res
        assert res > 0, "resolution is <= 0"
        res *= 2 * bound
        output = inp / res
        if stochastic:
            noise = output.new(output.shape).uniform_(-0.5, 0.5)
            output.add_(noise)
        output = output.round_()
        output *= res
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor):  # type: ignore[override]
        return grad_output, None, None, None


def _uq_inplace(t: Tensor, res: float, bound: float, stochastic: bool) -> Tensor:
    """No-grad ``UniformQuantize`` done in place on a tensor we own."""
    res = 1 / res if res > 1.0 else res
    assert res > 0, "resolution is <= 0"
    res *= 2 * bound
    t.div_(res)
    if stochastic:
        noise = t.new(t.shape).uniform_(-0.5, 0.5)
        t.add_(noise)
    t.round_()
    t.mul_(res)
    return t


def _noise_management(input_: Tensor, io: Any, nograd: bool) -> Any:
    nm_type = io.noise_management
    if nm_type == NoiseManagementType.NONE:
        return 1.0
    if nm_type == NoiseManagementType.ABS_MAX:
        if nograd:
            # max|x| = max(max x, -min x): exact (max/min/negation do not
            # round), NaN propagates as in abs().max(), and no |x| temporary
            # is allocated (two cheap reductions instead of abs + max).
            abs_max = torch.maximum(
                input_.amax(dim=-1, keepdim=True), input_.amin(dim=-1, keepdim=True).neg_()
            )
        else:  # keep max()'s gradient routing (to the arg-max element)
            abs_max = input_.abs().max(axis=-1, keepdim=True)[0]
        if io.nm_thres > 0.0:
            return torch.clamp(abs_max, max=io.nm_thres)
        return abs_max
    if nm_type == NoiseManagementType.CONSTANT:
        return io.nm_thres if io.nm_thres > 0.0 else 1.0
    if nm_type == NoiseManagementType.MAX:
        if nograd:
            _max = torch.amax(input_, dim=-1, keepdim=True)
        else:
            _max = input_.max(axis=-1, keepdim=True)[0]
        if io.nm_thres > 0.0:
            return torch.clamp(_max, max=io.nm_thres)
        return _max
    return AnalogMVM._compute_noise_management(input_, nm_type, io)  # raises ConfigError


def _stock_matmul_folds(input_: Tensor, weight: Tensor) -> bool:
    """Whether ``input_ @ weight.T`` (ATen ``matmul``) folds ``input_`` into a
    contiguous ``[-1, K]`` matrix and calls ``mm`` (copying if needed), as
    opposed to broadcasting ``weight`` and calling ``bmm``."""
    if weight.ndim != 2 or input_.ndim < 3:
        return False
    if weight.requires_grad:
        return True
    shape, strides = input_.shape, input_.stride()
    return all(strides[i] == strides[i + 1] * shape[i + 1] for i in range(input_.ndim - 2))


def _input_clamp(x: Tensor, bound: float) -> Tensor:
    """The MVM input clamp of the autograd path (``aihwkit_nabn.fixes`` swaps it on torch >= 2.14)."""
    return torch.clamp(x, min=-bound, max=bound)


def _prepare_input(
    input_: Tensor, weight: Tensor, scale: Any, scaling: bool, io: Any, nograd: bool
) -> Tensor:
    bound = io.inp_bound if io.inp_bound > 0 else float("inf")
    noise = io.inp_noise
    asymmetry_scale = 1.0 - io.inp_asymmetry
    res = io.inp_res

    if nograd:
        if (
            noise <= 0.0
            and not input_.is_contiguous()
            and _stock_matmul_folds(input_, weight)
            and (not isinstance(scale, Tensor) or scale.dtype == input_.dtype)
        ):
            # Stock matmul would copy the prepared input into a contiguous
            # [-1, K] matrix anyway; write it contiguous right away. All ops
            # below are elementwise (layout-independent) and the same mm sees
            # the same contiguous data.
            scaled = torch.empty(input_.shape, dtype=input_.dtype, device=input_.device)
            if scaling:
                torch.mul(input_, scale, out=scaled)
            else:
                scaled.copy_(input_)
        elif scaling:
            scaled = input_ * scale
        else:
            scaled = input_.clone()
        if res > 0:
            scaled = _uq_inplace(scaled, res, io.inp_bound, io.inp_sto_round)
        if bound != float("inf"):
            scaled.clamp_(min=-bound, max=bound)
    else:
        scaled = input_ * scale if scaling else input_.clone()
        if res > 0:
            scaled = _UQ.apply(scaled, res, io.inp_bound, io.inp_sto_round)
        scaled = _input_clamp(scaled, bound)

    if noise > 0.0:
        scaled += noise * torch.randn_like(scaled)
    if io.inp_asymmetry != 0.0:
        scaled[scaled < 0] *= asymmetry_scale
    return scaled


def _finalize_output(
    out_values: Tensor, io: Any, out_noise_values: Optional[Tensor], nograd: bool
) -> Tuple[Any, Tensor]:
    bound_test_passed: Any = True
    bound = io.out_bound if io.out_bound > 0 else float("inf")
    asymmetry_scale = 1.0 - io.out_asymmetry
    res = io.out_res

    if io.out_asymmetry != 0.0:
        out_values[out_values < 0] *= asymmetry_scale
    if nograd and (io.out_noise > 0.0 or out_noise_values is not None):
        noise = torch.randn_like(out_values)
        if out_noise_values is None:
            noise.mul_(io.out_noise)  # == io.out_noise * randn (commutative, one rounding)
        else:
            noise.mul_(out_noise_values.view(1, -1, *((1,) * (out_values.ndim - 2))))
        out_values += noise
    elif io.out_noise > 0.0 or out_noise_values is not None:
        if out_noise_values is None:
            out_values += io.out_noise * torch.randn_like(out_values)
        else:
            out_values += torch.randn_like(out_values) * out_noise_values.view(
                1, -1, *((1,) * (out_values.ndim - 2))
            )
    b_management = io.bound_management != BoundManagementType.NONE
    if nograd:
        if res > 0:
            out_values = _uq_inplace(out_values, res, io.out_bound, io.out_sto_round)
        if b_management:
            if out_values.numel() > 0:
                o_min, o_max = torch.aminmax(out_values)
                # NaN compares False exactly as in the elementwise stock test
                bound_test_passed = (o_max <= bound) & (o_min >= -bound)
            else:
                bound_test_passed = True
        if bound != float("inf"):
            out_values.clamp_(min=-bound, max=bound)
        return bound_test_passed, out_values

    if res > 0:
        out_values = _UQ.apply(out_values, res, io.out_bound, io.out_sto_round)
    if b_management:
        bound_test_passed = ((out_values <= bound) & (out_values >= -bound)).all()
    out_values = torch.clamp(out_values, min=-bound, max=bound)
    return bound_test_passed, out_values


def _compute_analog_mv(weight, input_, scale, scaling, io, nograd, out_noise_values):
    prepared = _prepare_input(input_, weight, scale, scaling, io, nograd)
    out_values = AnalogMVM._matmul(weight, prepared, trans=False)
    return _finalize_output(out_values, io, out_noise_values, nograd)


def _analog_matmul(
    weight: Tensor, input_: Tensor, io: Any, out_noise_values: Optional[Tensor]
) -> Tensor:
    """Mirror of ``AnalogMVM.matmul`` (``trans=False``), same arithmetic."""
    # pylint: disable=too-many-branches
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return AnalogMVM._matmul(weight, input_, False)

    nograd = not torch.is_grad_enabled()
    nm_scale_values = _noise_management(input_, io, nograd)

    out_size = input_.shape[:-1] + (weight.shape[0],)
    n_management = io.noise_management != NoiseManagementType.NONE
    b_management = io.bound_management != BoundManagementType.NONE
    # On CUDA, the all-zero-input test and the first bound-management test
    # are read back in ONE host sync (stock: three syncs per tile, counting
    # the boolean-mask assignment below). If the input turns out to be all
    # zero, the random numbers drawn meanwhile are given back by restoring the
    # CUDA generator (host-side state), so the result and the RNG stream are
    # exactly the stock ones.
    deferred_zero_test = (
        input_.is_cuda
        and b_management
        and io.inp_noise <= 0.0
        and isinstance(nm_scale_values, Tensor)
        and out_noise_values is None
    )
    if deferred_zero_test:
        all_zero = (nm_scale_values == 0.0).all()
        rng_state = torch.cuda.get_rng_state(input_.device)
    elif (
        io.inp_noise <= 0.0
        and isinstance(nm_scale_values, Tensor)
        and (nm_scale_values == 0.0).all()
    ):
        return torch.zeros(size=out_size, device=input_.device, dtype=input_.dtype)

    if isinstance(nm_scale_values, Tensor):
        # same values/gradient as ``nm[nm <= 0] = 1.0`` without a host sync
        nm_scale_values.masked_fill_(nm_scale_values <= 0.0, 1.0)

    out_scale = io.out_scale
    scale: Any = 1.0
    scaling = False
    if not b_management:
        if n_management:
            scale = scale / nm_scale_values
            scaling = not (isinstance(scale, Number) and scale == 1.0)
        _, output = _compute_analog_mv(
            weight, input_, scale, scaling, io, nograd, out_noise_values
        )
        if scaling or out_scale != 1.0:
            output *= out_scale / scale
        return output

    bound_test_passed = False
    reduction_due_to_bound_management = 0.5
    inp_res = io.inp_res
    if inp_res > 0:
        inp_res = 1 / inp_res if inp_res > 1.0 else inp_res
        inp_res *= 2.0 * io.inp_bound

    while not bound_test_passed:
        bound_test_passed = True
        reduction_due_to_bound_management *= 2.0
        scaling = False
        scale = 1.0
        if n_management:
            scale /= nm_scale_values
            scaling = not (isinstance(scale, Number) and scale == 1.0)
        if b_management:
            scale /= reduction_due_to_bound_management
            scaling = not (isinstance(scale, Number) and scale == 1.0)
        bound_test_passed, output = _compute_analog_mv(
            weight, input_, scale, scaling, io, nograd, out_noise_values
        )
        if deferred_zero_test:
            deferred_zero_test = False
            flags = torch.stack(
                [all_zero, torch.as_tensor(bound_test_passed, device=all_zero.device)]
            ).tolist()
            if flags[0]:
                torch.cuda.set_rng_state(rng_state, input_.device)
                return torch.zeros(size=out_size, device=input_.device, dtype=input_.dtype)
            bound_test_passed = bool(flags[1])
        bound_test_passed = bound_test_passed or (
            (reduction_due_to_bound_management > io.max_bm_factor)
            or (
                (inp_res > 0.0)
                and (reduction_due_to_bound_management > io.max_bm_res / inp_res)
            )
        )

    if scaling or out_scale != 1.0:
        output *= out_scale / scale
    return output


# --------------------------------------------------------------------------
# Tile modules
# --------------------------------------------------------------------------


def _has_hooks(mod: Module) -> bool:
    return bool(
        mod._forward_hooks
        or mod._forward_pre_hooks
        or mod._backward_hooks
        or getattr(mod, "_backward_pre_hooks", None)
        or _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or getattr(_torch_module, "_global_backward_pre_hooks", None)
        or "forward" in mod.__dict__
    )


def _tile_reason(tile: Module) -> Optional[str]:
    """None if ``tile`` runs on the exact fast MVM path, else why not."""
    if type(tile) is not TorchInferenceTile:  # pylint: disable=unidiomatic-typecheck
        return f"tile class {type(tile).__name__} (only TorchInferenceTile is mirrored)"
    sim = getattr(tile, "tile", None)
    if type(sim) is not TorchSimulatorTile:  # pylint: disable=unidiomatic-typecheck
        return f"simulator tile {type(sim).__name__} (only TorchSimulatorTile is mirrored)"
    if getattr(sim, "_analog_mvm", None) is not AnalogMVM:
        return f"custom analog MVM {getattr(sim, '_analog_mvm', None)!r}"
    if tile.in_trans or tile.out_trans or tile.analog_bias:
        return "transposed / analog-bias tile"
    return None


def _module_reason(mod: Module) -> Optional[str]:
    if type(mod) is TileModuleArray:  # pylint: disable=unidiomatic-typecheck
        for row in mod.array:
            for tile in row:
                reason = _tile_reason(tile)
                if reason is not None:
                    return reason
        return None
    return _tile_reason(mod)


def _tile_forward(tile: TorchInferenceTile, x_input: Tensor, tensor_view: Optional[Tuple]) -> Tensor:
    """Mirror of ``TorchInferenceTile.forward`` + ``joint_forward`` +
    ``TorchSimulatorTile.forward``."""
    sim = tile.tile
    sim.set_config(tile.rpu_config)
    is_test = not tile.training
    x_input = tile.pre_forward(x_input, x_input.dim() - 1, is_test, None)
    if not is_test:
        weight = TorchSimulatorTile.modify_weight(sim.weight, sim._modifier, x_input.shape[0])
    else:
        weight = sim.weight
    out = _analog_matmul(weight, x_input, sim._f_io, sim.out_noise_values)
    out = tile.post_forward(out, out.dim() - 1, is_test, None)
    if tensor_view is None:
        tensor_view = tile.get_tensor_view(out.dim())
    out = tile.apply_out_scaling(out, tensor_view)
    if tile.digital_bias:
        return out + tile.bias.view(*tensor_view)
    return out


def _call_tile(tile: Module, x_input: Tensor, tensor_view: Optional[Tuple], pass_view: bool) -> Tensor:
    if _tile_reason(tile) is None and not _has_hooks(tile):
        return _tile_forward(tile, x_input, tensor_view)
    if pass_view:
        return tile(x_input, tensor_view=tensor_view)
    return tile(x_input)


def _patch_major_ok(mod: Module) -> bool:
    """Whether, without autograd, the tile(s) behind ``mod`` give bitwise the
    same result for a contiguous ``[N, L, K]`` patch matrix as for aihwkit's
    transposed ``[N, K, L]`` one. Layout only matters to (i) reductions whose
    summation order depends on it (input-range statistics), (ii) random
    numbers drawn in an input-shaped tensor (``inp_noise``) and (iii) ATen's
    ``matmul``, which copies the patch matrix contiguous and calls ``mm`` only
    when the weight requires grad (else ``bmm`` on the transposed layout)."""
    tiles = (
        [t for row in mod.array for t in row]
        if type(mod) is TileModuleArray  # pylint: disable=unidiomatic-typecheck
        else [mod]
    )
    if type(mod) is TileModuleArray and _has_hooks(mod):  # pylint: disable=unidiomatic-typecheck
        return False
    for tile in tiles:
        if _tile_reason(tile) is not None or _has_hooks(tile):
            return False
        if tile.input_range is not None or tile.rpu_config.forward.inp_noise > 0.0:
            return False
        sim = tile.tile
        if not sim.weight.requires_grad or sim.weight.ndim != 2:
            return False
        if tile.training and tile.rpu_config.modifier.type not in (
            WeightModifierType.NONE,
            WeightModifierType.COPY,
        ):
            return False  # noisy weights made under no_grad do not require grad
    return True


def _analog_module_forward(mod: Module, x_input: Tensor) -> Tensor:
    """Run ``mod(x_input)`` (a tile module or a ``TileModuleArray``)."""
    if type(mod) is TileModuleArray and not _has_hooks(mod):  # pylint: disable=unidiomatic-typecheck
        tensor_view = None
        if mod.analog_tile_count == 1:
            analog_tile = mod.array[0][0]
            result = _call_tile(analog_tile, x_input, None, pass_view=False)
        else:
            last_dim = x_input.ndim - 1
            splits = torch.split(x_input, mod.in_sizes, dim=last_dim)
            result = None
            for idx, (x, in_tiles) in enumerate(zip(splits, mod.array)):
                out_result = []
                for analog_tile in in_tiles:
                    out_result.append(_call_tile(analog_tile, x, tensor_view, pass_view=True))
                if idx == 0:
                    result = torch.cat(out_result, last_dim)
                else:
                    result.add_(torch.cat(out_result, last_dim))
        if mod.bias is not None:
            if tensor_view is None:
                tensor_view = analog_tile.get_tensor_view(result.dim())
            return result + mod.bias.view(*tensor_view)
        return result
    return _call_tile(mod, x_input, None, pass_view=False)


# --------------------------------------------------------------------------
# Layer forwards (installed per instance)
# --------------------------------------------------------------------------


def _conv2d_forward(self: AnalogConv2d, x_input: Tensor) -> Tensor:
    """Accelerated ``_AnalogConvNd.forward`` for ``AnalogConv2d``."""
    use_indexed = self.use_indexed
    if use_indexed is None and not self.NEEDS_INDEXED:
        use_indexed = self.analog_module.is_cuda
    if (
        use_indexed
        or self.NEEDS_INDEXED
        or x_input.dim() != 4
        or isinstance(self.padding, str)
        or self.padding_mode != "zeros"
    ):
        return type(self).forward(self, x_input)  # stock path (indexed / unbatched)

    im_shape = x_input.shape
    args = (tuple(self.kernel_size), tuple(self.dilation), tuple(self.padding), tuple(self.stride))
    if not torch.is_grad_enabled() and _patch_major_ok(self.analog_module):
        # inference: build the [N, L, K] patch matrix directly contiguous,
        # so no transposing copy is needed before the GEMM
        x_input_ = _im2col_patch_major(x_input, *args)
    else:
        x_input_ = im2col(x_input, *args).transpose(-1, -2)
    out = _analog_module_forward(self.analog_module, x_input_).transpose(-1, -2)
    out_size = (
        im_shape[-2] + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1
    ) // self.stride[0] + 1
    return out.view(im_shape[0], self.out_channels, out_size, -1)


def _linear_forward(self: AnalogLinear, x_input: Tensor) -> Tensor:
    """Accelerated ``AnalogLinear.forward``."""
    return _analog_module_forward(self.analog_module, x_input)


_FORWARDS = {AnalogConv2d: _conv2d_forward, AnalogLinear: _linear_forward}


def _layer_plan(layer: Module) -> Tuple[Optional[Any], str]:
    """(forward to install or None, report string)."""
    cls = type(layer)
    if cls not in _FORWARDS:
        if getattr(cls, "NEEDS_INDEXED", False):
            return None, (
                f"stock: {cls.__name__} needs indexed convolution (RPUCuda tiles only; "
                "aihwkit raises ModuleError for torch tiles)"
            )
        return None, f"stock: layer class {cls.__name__} is not supported"
    inst_fwd = layer.__dict__.get("forward")
    if inst_fwd is not None and not _is_ours(inst_fwd):
        return None, "stock: instance already has its own forward"
    tile_reason = _module_reason(layer.analog_module)
    if cls is AnalogConv2d:
        if tile_reason is None:
            return _conv2d_forward, ACCELERATED
        return _conv2d_forward, (
            f"{ACCELERATED} (im2col only, when aihwkit takes the non-indexed path; "
            f"tile path stock: {tile_reason})"
        )
    if tile_reason is None:
        return _linear_forward, ACCELERATED
    return None, f"stock: {tile_reason}"


def _is_analog_layer(module: Module) -> bool:
    """An analog layer owning tiles (not an analog container/wrapper)."""
    return isinstance(module, AnalogLayerBase) and "analog_module" in module._modules


def _is_ours(fwd: Any) -> bool:
    return isinstance(fwd, functools.partial) and fwd.func in (_conv2d_forward, _linear_forward)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def accelerate(model: Module) -> Module:
    """Accelerate all supported analog layers of ``model`` in place; returns it.

    Idempotent. Layers that cannot be accelerated exactly keep aihwkit's stock
    forward; see :func:`acceleration_report`.
    """
    for module in model.modules():
        if not _is_analog_layer(module):
            continue
        fwd, report = _layer_plan(module)
        if fwd is not None:
            module.__dict__["forward"] = functools.partial(fwd, module)
        module.__dict__[_REPORT_ATTR] = report
    return model


def restore_stock(model: Module) -> Module:
    """Undo :func:`accelerate` in place; returns the model."""
    for module in model.modules():
        if _is_ours(module.__dict__.get("forward")):
            del module.__dict__["forward"]
        module.__dict__.pop(_REPORT_ATTR, None)
    return model


def is_accelerated(module: Module) -> bool:
    """True if ``module`` (or, for a container, any of its sub-modules) runs
    on the accelerated path."""
    return any(_is_ours(m.__dict__.get("forward")) for m in module.modules())


def acceleration_report(model: Module) -> Dict[str, str]:
    """``{layer name: "accelerated" | "accelerated (im2col only; ...)" | "stock: <why>"}``
    for every analog layer of an :func:`accelerate`-d model (layers never seen
    by :func:`accelerate` report ``"stock: not accelerated"``)."""
    report = {}
    for name, module in model.named_modules():
        if _is_analog_layer(module):
            report[name] = module.__dict__.get(_REPORT_ATTR, "stock: not accelerated")
    return report
