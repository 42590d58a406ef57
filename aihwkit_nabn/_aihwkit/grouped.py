"""Grouped / depthwise convolutions for aihwkit 1.1's analog conversion (a compat shim of this layer).

aihwkit 1.1's ``AnalogConv2d`` refuses ``groups > 1`` (``ValueError: Only one
group is supported``), so ``convert_to_analog`` fails on MobileNet, LRASPP,
EfficientNet, RegNet, ... This module rewrites every grouped ``nn.Conv2d``
as a :class:`GroupedConv2d`: a digital container of ``groups`` plain
``nn.Conv2d(groups=1)`` children that computes the same function.  aihwkit's
``convert_to_analog`` then turns every child into an ``AnalogConv2d`` (one
analog tile per group).

Each group becomes its own analog tile: its own weight scale, input scaling, output noise and
drift-compensation factor (a ``kh*kw*Cin/g``-row crossbar per group), which is optimistic against one
block-diagonal crossbar per layer. :func:`aihwkit_nabn.analog.convert.to_analog` splits grouped
convolutions before aihwkit's conversion (or keeps them digital) and
:func:`~aihwkit_nabn.analog.convert.conversion_report` says what became analog.

A kept grouped ``nn.Conv2d`` must also be excluded from aihwkit's ``convert_to_analog``, which would
otherwise refuse it again; ``to_analog`` does both.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aihwkit.nn.modules.base import AnalogLayerBase

__all__ = ["GroupedConv2d", "is_grouped_conv2d", "grouped_conv_names", "split_grouped_convs", "merge_grouped_convs"]


def is_grouped_conv2d(module: nn.Module) -> bool:
    """True for a plain ``nn.Conv2d`` (exact class) with ``groups > 1``.

    Subclasses of ``nn.Conv2d`` are left alone on purpose: they may override
    ``forward`` (weight standardisation, quantisation, ...), so splitting them
    into plain convolutions could change what they compute.  aihwkit's own
    conversion also matches exact classes only.
    """
    return type(module) is nn.Conv2d and module.groups > 1


def _f_pad_amounts(padding: Any, kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> Tuple[int, ...]:
    """(left, right, top, bottom) for ``F.pad``, as ``nn.Conv2d`` pads.

    ``'same'``: total ``dilation * (kernel - 1)`` per dimension, the odd extra
    element on the right/bottom (torch's convention).
    """
    amounts: List[int] = []
    for dim in (1, 0):  # F.pad starts with the last dimension (width)
        if padding == "same":
            total = dilation[dim] * (kernel_size[dim] - 1)
            amounts += [total // 2, total - total // 2]
        else:
            amounts += [int(padding[dim])] * 2
    return tuple(amounts)


class GroupedConv2d(nn.Module):
    """``nn.Conv2d(groups=g)`` computed as ``g`` separate ``nn.Conv2d(groups=1)``.

    Group ``i`` sees input channels ``[i*Cin/g, (i+1)*Cin/g)`` and produces
    output channels ``[i*Cout/g, (i+1)*Cout/g)``; outputs are concatenated
    along the channel dimension, exactly as the grouped convolution does (up
    to float summation order inside each dot product).

    The children live in the ``nn.ModuleList`` ``convs`` (so their qualified
    names end in ``.convs.<i>``); ``groups`` stays the integer group count, as
    on ``nn.Conv2d``.  The container itself has no parameters, so
    ``convert_to_analog`` replaces each child by an ``AnalogConv2d``.

    Padding: numeric zero padding is left to the children (they look like
    ordinary convolutions).  String padding (``'same'``) and non-zero padding
    modes (``'reflect'``, ``'replicate'``, ``'circular'``) are applied once in
    the container with ``F.pad`` (as ``nn.Conv2d`` itself does for non-zero
    modes) and the children get ``padding=0, padding_mode='zeros'``, which
    aihwkit's analog convolution accepts.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups < 2:
            raise ValueError(f"expected a grouped nn.Conv2d (groups > 1), got groups={conv.groups}")
        g = conv.groups
        self.in_channels: int = conv.in_channels
        self.out_channels: int = conv.out_channels
        self.kernel_size: Tuple[int, int] = tuple(conv.kernel_size)  # type: ignore[assignment]
        self.stride: Tuple[int, int] = tuple(conv.stride)  # type: ignore[assignment]
        self.padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        self.dilation: Tuple[int, int] = tuple(conv.dilation)  # type: ignore[assignment]
        self.groups: int = g
        self.padding_mode: str = conv.padding_mode
        self.in_per_group = conv.in_channels // g
        self.out_per_group = conv.out_channels // g
        has_bias = conv.bias is not None
        self._has_bias = has_bias

        # How padding is realised.
        # (left, right, top, bottom) as F.pad wants it; None = children pad.
        self._pre_pad: Optional[Tuple[int, ...]] = None
        child_padding: Any = self.padding
        if self.padding == "valid":
            child_padding = 0
        elif self.padding == "same" or self.padding_mode != "zeros":
            pre = _f_pad_amounts(self.padding, self.kernel_size, self.dilation)
            self._pre_pad = pre if any(pre) else None
            child_padding = 0

        w = conv.weight.detach()
        b = conv.bias.detach() if has_bias else None
        convs = []
        for i in range(g):
            child = nn.Conv2d(
                self.in_per_group,
                self.out_per_group,
                self.kernel_size,
                stride=self.stride,
                padding=child_padding,
                dilation=self.dilation,
                groups=1,
                bias=has_bias,
                padding_mode="zeros",
                device=w.device,
                dtype=w.dtype,
            )
            rows = slice(i * self.out_per_group, (i + 1) * self.out_per_group)
            with torch.no_grad():
                child.weight.copy_(w[rows])
                if b is not None:
                    child.bias.copy_(b[rows])
            child.weight.requires_grad_(conv.weight.requires_grad)
            if b is not None:
                child.bias.requires_grad_(conv.bias.requires_grad)
            convs.append(child)
        self.convs = nn.ModuleList(convs)
        self.train(conv.training)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "GroupedConv2d":
        """Build the container from an existing grouped convolution (copied)."""
        return cls(conv)

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.size(1) != self.in_channels:
            raise RuntimeError(
                f"GroupedConv2d expected {self.in_channels} input channels, got {x.size(1)}"
            )
        if self._pre_pad is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pre_pad, mode=mode)
        chunks = x.split(self.in_per_group, dim=1)
        out = torch.cat([conv(chunk) for conv, chunk in zip(self.convs, chunks)], dim=1)
        return out.squeeze(0) if unbatched else out

    @torch.no_grad()
    def to_conv(self) -> nn.Conv2d:
        """Reassemble one grouped ``nn.Conv2d`` from the children.

        Works with digital children and with aihwkit analog children (their
        weights are read with ``get_weights()``, i.e. the stored target
        weights, not the programmed/drifted conductances).
        """
        weights, biases = [], []
        for child in self.convs:
            if isinstance(child, AnalogLayerBase):
                wt, bs = child.get_weights()
                wt = wt.reshape(self.out_per_group, self.in_per_group, *self.kernel_size)
            else:
                wt, bs = child.weight, child.bias
            weights.append(wt.detach())
            biases.append(None if bs is None else bs.detach())
        has_bias = biases[0] is not None
        weight = torch.cat(weights, 0)
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=has_bias,
            padding_mode=self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if has_bias:
            conv.bias.copy_(torch.cat(biases, 0))  # type: ignore[arg-type]
        return conv

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        s += f", groups={self.groups}"
        if not self._has_bias:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        kinds = sorted({type(c).__name__ for c in self.convs})
        s += f", children={'/'.join(kinds)}x{len(self.convs)}"
        return s


def grouped_conv_names(model: nn.Module) -> List[str]:
    """Qualified names of the grouped ``nn.Conv2d`` layers :func:`split_grouped_convs` splits."""
    return [name for name, m in model.named_modules() if is_grouped_conv2d(m)]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    parent._modules[attr] = new  # works for Sequential/ModuleList/ModuleDict children too


def split_grouped_convs(model: nn.Module, *, keep: Iterable[str] = ()) -> nn.Module:
    """Deep copy of ``model`` with each grouped ``nn.Conv2d`` replaced by :class:`GroupedConv2d`.

    Args:
        model: any torch module; never modified.
        keep: qualified names (as in ``model.named_modules()``) of grouped
            convolutions to leave as they are (digital ``nn.Conv2d``).  Pass
            the same names as ``exclude_modules`` to aihwkit's
            ``convert_to_analog``, or it will refuse them.

    Returns:
        The rewritten copy (a ``GroupedConv2d`` if ``model`` itself is a
        grouped convolution).  A convolution shared between several parents
        stays shared (one container).

    Raises:
        ValueError: a ``keep`` name is not a grouped ``nn.Conv2d`` of ``model``.
    """
    keep = [keep] if isinstance(keep, str) else list(keep)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name in keep:
        if name not in modules:
            raise ValueError(f"keep: {name!r} is not a module of the model")
        if not is_grouped_conv2d(modules[name]):
            m = modules[name]
            what = f"nn.Conv2d with groups={m.groups}" if isinstance(m, nn.Conv2d) else type(m).__name__
            raise ValueError(f"keep: {name!r} is not a grouped nn.Conv2d (it is a {what})")
    keep_set = set(keep)

    model = copy.deepcopy(model)
    if is_grouped_conv2d(model):
        return model if "" in keep_set else GroupedConv2d(model)
    targets = [
        (name, m)
        for name, m in model.named_modules(remove_duplicate=False)
        if name and name not in keep_set and is_grouped_conv2d(m)
    ]
    replaced: Dict[int, GroupedConv2d] = {}
    for name, m in targets:
        if id(m) not in replaced:
            replaced[id(m)] = GroupedConv2d(m)
        _set_submodule(model, name, replaced[id(m)])
    return model


def merge_grouped_convs(model: nn.Module) -> nn.Module:
    """Inverse of :func:`split_grouped_convs`: a deep copy in which every
    :class:`GroupedConv2d` is one grouped ``nn.Conv2d`` again (see
    :meth:`GroupedConv2d.to_conv`; analog children are read with
    ``get_weights()``).  Use after aihwkit's ``convert_to_digital`` or
    directly on an analog model to export a plain torchvision-style model.
    """
    model = copy.deepcopy(model)
    if isinstance(model, GroupedConv2d):
        return model.to_conv()
    targets = [
        (name, m)
        for name, m in model.named_modules(remove_duplicate=False)
        if name and isinstance(m, GroupedConv2d)
    ]
    merged: Dict[int, nn.Conv2d] = {}
    for name, m in targets:
        if id(m) not in merged:
            merged[id(m)] = m.to_conv().train(m.training)
        _set_submodule(model, name, merged[id(m)])
    return model
