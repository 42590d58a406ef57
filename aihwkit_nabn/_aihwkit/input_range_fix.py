"""Fix for the learned input-range gradient of aihwkit 1.1.0's torch tiles under torch >= 2.14.

The bug
-------
``TorchInferenceTile.pre_forward`` clips a tile's input to its learned range ``r`` and divides by
``r``, so every clipped input arrives at the analog MVM as exactly ``+-1.0``. The MVM then clamps
its input to ``+-forward.inp_bound`` (1.0) in ``AnalogMVM._prepare_input``. aihwkit's input-range
gradient (``InputRangeForward.backward``) is built from the gradient that flows back to those
clipped inputs:

    dL/dr = r * gradient_scale * ( sum_{x_i >= r} min(d_i, 0) - sum_{x_i <= -r} max(d_i, 0) )
            + decay * r * [fraction of |x_i| < r  >  input_min_percentage]

with ``d_i = dL/dx_i`` the gradient w.r.t. the clipped input. Up to torch 2.13, ``torch.clamp``
passed the gradient of elements lying exactly on a bound (``min <= x <= max``). From torch 2.14 it
gives them zero gradient (like ``hardtanh``), so the second clamp zeroes ``d_i`` for every clipped
input: the clipping term vanishes and, in its place, autograd leaves the uncancelled remainder
``sum_clipped d_i * sign(x_i)`` of the ``/ r`` and ``* r`` scalings — the range no longer grows
where clipping hurts and is driven by the wrong quantity.

The fix
-------
:func:`apply_input_range_fix` replaces exactly one operation — the ``+-inp_bound`` clamp of the MVM
input — with a clamp whose forward is ``torch.clamp`` (bitwise identical values) and whose backward
passes the gradient where ``-bound <= x <= bound``, i.e. torch <= 2.13's rule that aihwkit 1.1.0 was
written and tested against. It is installed in the two places that run this clamp with autograd:

* the accelerated mirror's input clamp (:func:`~aihwkit_nabn._aihwkit.mvm.set_input_clamp`, the seam
  the mirror keeps for exactly this purpose), and
* ``AnalogMVM._prepare_input`` (aihwkit's stock path): aihwkit's method has no such seam, so the fix
  puts the mirror's :func:`~aihwkit_nabn._aihwkit.mvm.prepare_input` (the project's one copy of it,
  arithmetic identical to aihwkit 1.1.0's) in its place, with the fixed clamp.

Both stay bitwise identical to each other, forward and backward.

Nothing else changes: forward values, random numbers, the ``no_grad`` paths, the output-bound clamp
and the clamp of ``apply_input_range`` (whose zero gradient at ``|x| == r`` is consistent with
aihwkit counting such inputs as clipped) are untouched. The aihwkit 1.2.0 sources were not available
to compare with; the fix restores the behaviour of aihwkit 1.1.0 on torch <= 2.13.

:func:`apply_input_range_fix` first runs a tiny numeric probe (:func:`input_range_gradient_is_correct`)
and installs the fix only if the installed aihwkit + torch compute a wrong input-range gradient; it
is idempotent and verifies the fix with the same probe. :func:`remove_input_range_fix` puts aihwkit's
method and the stock clamp back; :func:`input_range_fix` does both around a ``with`` block (hardware-aware
training uses it, so nothing stays changed after the training call). :func:`input_range_fix_status`
reports the state.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import torch
from torch import Tensor
from torch.autograd import Function

import aihwkit
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

from .accelerated import accelerate
from .mvm import input_clamp, prepare_input, set_input_clamp, stock_input_clamp
from .version import require_supported

__all__ = [
    "apply_input_range_fix",
    "remove_input_range_fix",
    "input_range_fix",
    "input_range_gradient_is_correct",
    "input_range_fix_status",
    "bound_clamp",
    "expected_input_range_grad",
]

# aihwkit's own method, kept to put it back.
_STOCK_MVM_PREPARE = AnalogMVM.__dict__["_prepare_input"]


class _BoundClamp(Function):
    """``torch.clamp(x, -bound, bound)`` with torch <= 2.13's gradient: passed where ``|x| <= bound``."""

    # pylint: disable=abstract-method, arguments-differ

    @staticmethod
    def forward(ctx: Any, x: Tensor, bound: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=-bound, max=bound)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # Same expression as torch <= 2.13's clamp_backward (NaN inputs get zero gradient).
        inside = (x >= -ctx.bound).logical_and_(x <= ctx.bound)
        return torch.where(inside, grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None


def bound_clamp(x: Tensor, bound: float) -> Tensor:
    """Return ``clamp(x, -bound, bound)``; its gradient includes elements exactly on the bound.

    Without autograd (or for a tensor that needs no gradient) this is plain ``torch.clamp``.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _BoundClamp.apply(x, bound)
    return torch.clamp(x, min=-bound, max=bound)


def _fixed_mvm_prepare_input(
    cls: Any, input_: Tensor, scale: Tensor, scaling: bool, with_asymmetry: bool, io_pars: Any
) -> Tensor:
    """``AnalogMVM._prepare_input`` with aihwkit's signature, run by the mirror (with the fixed clamp)."""
    # pylint: disable=unused-argument
    return prepare_input(input_, scale, scaling, io_pars, not torch.is_grad_enabled(), with_asymmetry=with_asymmetry)


_FIXED_MVM_PREPARE = classmethod(_fixed_mvm_prepare_input)


def _installed() -> bool:
    return AnalogMVM.__dict__["_prepare_input"] is _FIXED_MVM_PREPARE and input_clamp() is bound_clamp


# --------------------------------------------------------------------------- probe


def expected_input_range_grad(x: Tensor, r: float, d: Tensor, ir_params: Any) -> float:
    """Return aihwkit's input-range gradient computed directly (no autograd), as a float.

    ``x``: the tile inputs (before clipping); ``r``: the input range; ``d``: ``dL/dx_clipped`` for
    each input, the gradient w.r.t. the clipped input; ``ir_params``: the ``InputRangeParameter``.
    Formula (aihwkit 1.1.0, ``InputRangeForward.backward``)::

        g = sum_{x_i >= r} min(d_i, 0) - sum_{x_i <= -r} max(d_i, 0)
        g *= r * gradient_scale                    (if gradient_relative)
        g += decay * r * [mean(|x_c| < r) > input_min_percentage]
    """
    xs, ds = x.double().flatten().tolist(), d.double().flatten().tolist()
    grad = 0.0
    for xi, di in zip(xs, ds):
        if xi >= r:
            grad += min(di, 0.0)
        elif xi <= -r:
            grad -= max(di, 0.0)
    if ir_params.gradient_relative:
        grad *= r * ir_params.gradient_scale
    if ir_params.decay > 0:
        inside = sum(abs(max(-r, min(r, xi))) < r for xi in xs) / len(xs)
        grad += ir_params.decay * r * float(inside > ir_params.input_min_percentage)
    return grad


def _probe_config() -> Any:
    """A torch-tile config whose MVM is exactly ``W @ clamp(x, -r, r)``: only the input clamps act."""
    rpu = TorchInferenceRPUConfig()
    rpu.forward.is_perfect = False  # keep the MVM's input clamp (the one the bug is in)
    rpu.forward.inp_res = 0.0
    rpu.forward.out_res = 0.0
    rpu.forward.out_noise = 0.0
    rpu.forward.out_bound = 0.0  # no output clamp
    rpu.forward.noise_management = NoiseManagementType.NONE
    rpu.forward.bound_management = BoundManagementType.NONE
    rpu.mapping.weight_scaling_omega = 0.0
    rpu.mapping.max_input_size = 0
    rpu.mapping.max_output_size = 0
    ir = rpu.pre_post.input_range
    ir.enable, ir.learn_input_range, ir.init_value, ir.init_from_data, ir.decay = True, True, 1.0, 0, 0.0
    return rpu


# Inputs below, exactly at, inside and beyond the range r = 1; weights/upstream gradients chosen so
# that the gradients d_i of the clipped inputs have both signs. All values are exact in fp32.
_PROBE_X = ((-2.0, -1.0, -0.5, 0.25, 1.0, 3.0), (1.0, -3.0, 0.5, -1.0, 2.0, 0.0))
_PROBE_W = ((1.0, -1.0, 0.5, -0.5, -1.0, -0.5), (-0.5, 1.0, 0.25, 1.0, 0.5, -1.0))
_PROBE_G = ((1.0, 0.5), (0.5, 1.0))


def _probe(accelerated: bool) -> bool:
    """Compare autograd's input-range gradient of a tiny AnalogLinear with the direct formula."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        rpu = _probe_config()
        layer = AnalogLinear(6, 2, bias=False, rpu_config=rpu)
        weight = torch.tensor(_PROBE_W)
        layer.set_weights(weight)
        if accelerated:
            accelerate(layer)
        layer.eval()
        x = torch.tensor(_PROBE_X)
        g = torch.tensor(_PROBE_G)
        (layer(x) * g).sum().backward()
        tile = next(layer.analog_tiles())
        actual = tile.input_range.grad
        d = g @ weight  # dL/dx_clipped: the MVM is W @ clamp(x) (scaled by 1/r and back by r)
        expected = expected_input_range_grad(x, float(tile.input_range.detach()), d, rpu.pre_post.input_range)
    return actual is not None and abs(float(actual) - expected) <= 1e-6 * (1.0 + abs(expected))


def input_range_gradient_is_correct(accelerated: Optional[bool] = None) -> bool:
    """Return whether the installed aihwkit + torch compute the learned input range's gradient right.

    Runs a tiny probe (a 6-input AnalogLinear with inputs below, on and beyond its range, about a
    millisecond, random state preserved) and compares autograd's gradient of the input range with
    :func:`expected_input_range_grad`. ``accelerated``: probe the stock layer (False), the
    accelerated path (True) or both (None, default).
    """
    paths = (False, True) if accelerated is None else (bool(accelerated),)
    return all(_probe(path) for path in paths)


def _torch_clamp_boundary_grad() -> float:
    """Gradient torch's own clamp gives an element lying exactly on its bound (1.0 up to torch 2.13)."""
    x = torch.ones(1, requires_grad=True)
    torch.clamp(x, min=-1.0, max=1.0).sum().backward()
    assert x.grad is not None
    return float(x.grad)


# --------------------------------------------------------------------------- install / remove


def apply_input_range_fix(force: bool = False) -> Dict[str, Any]:
    """Install the input-range gradient fix if this aihwkit + torch need it; return the status.

    Idempotent. Without ``force`` nothing is installed when the probe finds the gradient already
    correct (e.g. torch <= 2.13). ``force=True`` installs it regardless (on torch <= 2.13 it then
    reproduces the stock gradients exactly).

    Returns:
        :func:`input_range_fix_status` after the call.

    Raises:
        RuntimeError: if aihwkit is outside the supported range (the mirror copies 1.1.0's method),
            or if the gradient is still wrong after installing (the fix is then removed).
    """
    if _installed():
        return input_range_fix_status()
    if not force and input_range_gradient_is_correct():
        return input_range_fix_status()
    require_supported("the input-range gradient fix")
    AnalogMVM._prepare_input = _FIXED_MVM_PREPARE
    set_input_clamp(bound_clamp)
    if not input_range_gradient_is_correct():
        remove_input_range_fix()
        raise RuntimeError(
            f"input-range gradient still wrong after installing the fix (torch {torch.__version__}, "
            f"aihwkit {aihwkit.__version__}); the fix was removed"
        )
    return input_range_fix_status()


def remove_input_range_fix() -> None:
    """Put back aihwkit's ``AnalogMVM._prepare_input`` and the mirror's stock input clamp (idempotent)."""
    if AnalogMVM.__dict__["_prepare_input"] is _FIXED_MVM_PREPARE:
        AnalogMVM._prepare_input = _STOCK_MVM_PREPARE
    set_input_clamp(stock_input_clamp)


@contextmanager
def input_range_fix(force: bool = False) -> Iterator[Dict[str, Any]]:
    """Apply the fix (as :func:`apply_input_range_fix`) for the ``with`` block; yield its status.

    On exit the fix is removed again unless it was already installed before the block, so aihwkit's
    classes are left exactly as they were found.
    """
    was_installed = _installed()
    status = apply_input_range_fix(force)
    try:
        yield status
    finally:
        if not was_installed:
            remove_input_range_fix()


def input_range_fix_status() -> Dict[str, Any]:
    """Return a plain dict: versions, whether the fix is installed, and what the probes find now.

    Keys: ``torch``, ``aihwkit``, ``torch_clamp_boundary_grad`` (1.0 up to torch 2.13, 0.0 from
    2.14), ``installed``, ``stock_correct``, ``accelerated_correct``.
    """
    return {
        "torch": str(torch.__version__),
        "aihwkit": str(aihwkit.__version__),
        "torch_clamp_boundary_grad": _torch_clamp_boundary_grad(),
        "installed": _installed(),
        "stock_correct": input_range_gradient_is_correct(accelerated=False),
        "accelerated_correct": input_range_gradient_is_correct(accelerated=True),
    }
