"""Patch extraction (im2col) for 2-D analog convolutions, bitwise equal to ATen's, in one kernel per batch.

ATen's ``im2col`` (behind ``torch.nn.functional.unfold``) launches one kernel per image on CUDA and its
backward (``col2im``) does the same. Here im2col is one ``pad`` + one strided-view copy producing exactly
ATen's ``[N, C*kh*kw, L]`` contiguous tensor, and its backward accumulates the kh*kw patch gradients with
whole-batch strided adds in exactly the order ATen's ``col2im`` uses (ascending kernel offsets on CPU,
descending on CUDA, both starting from zero), so input gradients are bitwise identical too. For dtypes
where ATen's CUDA ``col2im`` accumulates in a wider type (half, bfloat16) the backward calls
``torch.nn.functional.fold`` itself. :func:`im2col_patch_major` builds the transposed ``[N, L, K]``
matrix directly contiguous, for inference paths whose GEMM reads that layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

__all__ = ["im2col", "im2col_patch_major"]



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


def im2col_patch_major(x: Tensor, ks, dil, pad, st) -> Tensor:
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


