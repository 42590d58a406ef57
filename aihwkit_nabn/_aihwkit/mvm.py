"""A mirror of aihwkit 1.1's ``AnalogMVM`` (forward of the torch tile's analog matrix-vector product).

Same arithmetic, operation for operation and random number for random number, without the work that is
not physics: ``_prepare_input`` and ``UniformQuantize`` each start with a ``clone()`` that is immediately
replaced, ``abs()`` is materialised before a max-reduction, boolean-mask indexing (a host sync on CUDA)
replaces zero noise-management scales, the bound-management clipping test is computed even when bound
management is off, and ``matmul`` makes one more contiguous copy of a transposed patch matrix. In-place
variants and single-pass reductions are used only when autograd is disabled.

:func:`prepare_input` is also the project's single copy of aihwkit's ``AnalogMVM._prepare_input``: the
input-range gradient fix (:mod:`.input_range_fix`) installs it, with a fixed clamp, in place of the stock
method. :data:`input_clamp` is the seam that fix swaps.
"""

from __future__ import annotations

from numbers import Number
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from aihwkit.simulator.parameters.enums import AnalogMVType, BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

__all__ = ["analog_matmul", "prepare_input", "noise_management", "input_clamp", "set_input_clamp", "stock_input_clamp"]


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


def noise_management(input_: Tensor, io: Any, nograd: bool) -> Any:
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


def stock_input_clamp(x: Tensor, bound: float) -> Tensor:
    """The MVM input clamp of the autograd path, as aihwkit has it: ``torch.clamp(x, -bound, bound)``."""
    return torch.clamp(x, min=-bound, max=bound)


#: The input clamp :func:`prepare_input` uses with autograd; :func:`set_input_clamp` swaps it.
_input_clamp: Callable[[Tensor, float], Tensor] = stock_input_clamp


def set_input_clamp(clamp: Callable[[Tensor, float], Tensor]) -> None:
    """Make ``clamp(x, bound)`` the MVM input clamp of the autograd path (the input-range fix's seam)."""
    global _input_clamp  # pylint: disable=global-statement
    _input_clamp = clamp


def input_clamp() -> Callable[[Tensor, float], Tensor]:
    """Return the MVM input clamp in use (:func:`stock_input_clamp` unless a fix swapped it)."""
    return _input_clamp


def prepare_input(
    input_: Tensor, scale: Any, scaling: bool, io: Any, nograd: bool, weight: Optional[Tensor] = None,
    with_asymmetry: Optional[bool] = None,
) -> Tensor:
    """aihwkit's ``AnalogMVM._prepare_input``: scale, quantise, clamp, add input noise, asymmetry.

    ``weight`` (the tile weight of the following GEMM) lets the no-grad path write the result directly
    in the contiguous layout ATen's ``matmul`` would copy it into; ``with_asymmetry`` defaults to
    ``io.inp_asymmetry != 0`` as in aihwkit's only caller.
    """
    bound = io.inp_bound if io.inp_bound > 0 else float("inf")
    noise = io.inp_noise
    asymmetry_scale = 1.0 - io.inp_asymmetry
    res = io.inp_res

    if nograd:
        if (
            noise <= 0.0
            and weight is not None
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
    if (io.inp_asymmetry != 0.0) if with_asymmetry is None else with_asymmetry:
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
    prepared = prepare_input(input_, scale, scaling, io, nograd, weight)
    out_values = AnalogMVM._matmul(weight, prepared, trans=False)
    return _finalize_output(out_values, io, out_noise_values, nograd)


def analog_matmul(
    weight: Tensor, input_: Tensor, io: Any, out_noise_values: Optional[Tensor]
) -> Tensor:
    """Mirror of ``AnalogMVM.matmul`` (``trans=False``), same arithmetic."""
    # pylint: disable=too-many-branches
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return AnalogMVM._matmul(weight, input_, False)

    nograd = not torch.is_grad_enabled()
    nm_scale_values = noise_management(input_, io, nograd)

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


