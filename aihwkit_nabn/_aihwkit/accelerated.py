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

On CUDA, a layer whose configuration and input the fused Triton kernels of
:mod:`.fused` cover (inference: no autograd, tiles in eval mode) runs through
them instead: the same arithmetic again, bit for bit, in two kernels and the
stock GEMM per tile; a model root gets the fused path's speculative forward
(one host sync per forward instead of one per tile for iterative bound
management). ``AIHWKIT_NABN_FUSED=0`` (or :func:`set_fused`) turns the fused
path off; on the CPU the torch path above always runs.

Caveat: ``torch.nn.DataParallel`` replicas copy ``__dict__`` shallowly, so an
accelerated layer's replica would call the original layer; call
:func:`restore_stock` before wrapping a model in ``DataParallel`` (DDP is fine).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module
from torch.nn.modules import module as _torch_module

from aihwkit.nn.modules.conv import AnalogConv2d
from aihwkit.nn.modules.linear import AnalogLinear
from aihwkit.simulator.parameters.enums import WeightModifierType
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
from aihwkit.simulator.tiles.array import TileModuleArray
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile

from .im2col import im2col, im2col_patch_major
from .mvm import analog_matmul
from .tiles import is_analog_layer
from .version import aihwkit_supported

try:  # Triton comes with torch on Linux; without it the exact torch path runs everywhere
    from .fused import forward_if_supported, fused_supported, speculate, unspeculate
except ImportError:  # pragma: no cover
    forward_if_supported = fused_supported = None

__all__ = ["accelerate", "restore_stock", "is_accelerated", "acceleration_report", "fused_report", "set_fused",
           "fused_enabled", "ACCELERATED"]

_REPORT_ATTR = "_nabn_acceleration"
ACCELERATED = "accelerated"
_FUSED = {"enabled": forward_if_supported is not None and os.environ.get("AIHWKIT_NABN_FUSED", "1") != "0"}


def set_fused(enabled: bool) -> None:
    """Turn the fused CUDA kernels of accelerated layers on or off (default on, ``AIHWKIT_NABN_FUSED=0``: off)."""
    if enabled and forward_if_supported is None:
        raise RuntimeError("the fused path needs Triton, which is not installed")
    _FUSED["enabled"] = bool(enabled)


def fused_enabled() -> bool:
    """Whether accelerated layers use the fused CUDA kernels where they apply."""
    return _FUSED["enabled"]


def _fused(layer: Module, x: Tensor) -> Optional[Tensor]:
    """The fused forward of ``layer`` when it applies (CUDA, inference, a covered configuration), else None."""
    if _FUSED["enabled"] and x.is_cuda:
        return forward_if_supported(layer, x)
    return None



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
    out = analog_matmul(weight, x_input, sim._f_io, sim.out_noise_values)
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
    out = _fused(self, x_input)
    if out is not None:
        return out
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
        x_input_ = im2col_patch_major(x_input, *args)
    else:
        x_input_ = im2col(x_input, *args).transpose(-1, -2)
    out = _analog_module_forward(self.analog_module, x_input_).transpose(-1, -2)
    out_size = (
        im_shape[-2] + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1
    ) // self.stride[0] + 1
    return out.view(im_shape[0], self.out_channels, out_size, -1)


def _linear_forward(self: AnalogLinear, x_input: Tensor) -> Tensor:
    """Accelerated ``AnalogLinear.forward``."""
    out = _fused(self, x_input)
    if out is not None:
        return out
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


def _is_ours(fwd: Any) -> bool:
    return isinstance(fwd, functools.partial) and fwd.func in (_conv2d_forward, _linear_forward)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def accelerate(model: Module) -> Module:
    """Accelerate all supported analog layers of ``model`` in place; returns it.

    Idempotent. Layers that cannot be accelerated exactly keep aihwkit's stock
    forward; see :func:`acceleration_report`. With an aihwkit outside the supported
    range (:mod:`.version`) every layer keeps the stock forward.
    """
    for module in model.modules():
        if not is_analog_layer(module):
            continue
        fwd, report = _layer_plan(module) if aihwkit_supported() else (None, "stock: unsupported aihwkit version")
        if fwd is not None:
            module.__dict__["forward"] = functools.partial(fwd, module)
        module.__dict__[_REPORT_ATTR] = report
    if forward_if_supported is not None and not is_analog_layer(model) and "forward" not in model.__dict__ \
            and is_accelerated(model):
        speculate(model)  # acts only on CUDA, in eval mode without autograd, when fused tiles ask for it
    return model


def restore_stock(model: Module) -> Module:
    """Undo :func:`accelerate` in place; returns the model."""
    if forward_if_supported is not None:
        unspeculate(model)
    for module in model.modules():
        if _is_ours(module.__dict__.get("forward")):
            del module.__dict__["forward"]
        module.__dict__.pop(_REPORT_ATTR, None)
    return model


def is_accelerated(module: Module) -> bool:
    """True if ``module`` (or, for a container, any of its sub-modules) runs
    on the accelerated path."""
    return any(_is_ours(m.__dict__.get("forward")) for m in module.modules())


def fused_report(model: Module) -> Dict[str, Optional[str]]:
    """``{layer name: None (the fused CUDA kernels apply in inference) or why not}`` for every analog layer.

    Whether a call takes the fused path also depends on its input (CUDA, fp32, no autograd); the
    fused path is off altogether when :func:`fused_enabled` is False.
    """
    if fused_supported is None:
        return {name: "Triton is not installed" for name, m in model.named_modules() if is_analog_layer(m)}
    return {name: fused_supported(m) for name, m in model.named_modules() if is_analog_layer(m)}


def acceleration_report(model: Module) -> Dict[str, str]:
    """``{layer name: "accelerated" | "accelerated (im2col only; ...)" | "stock: <why>"}``
    for every analog layer of an :func:`accelerate`-d model (layers never seen
    by :func:`accelerate` report ``"stock: not accelerated"``)."""
    report = {}
    for name, module in model.named_modules():
        if is_analog_layer(module):
            report[name] = module.__dict__.get(_REPORT_ATTR, "stock: not accelerated")
    return report

