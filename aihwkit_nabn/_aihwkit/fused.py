"""Fused, bitwise-exact analog forward for aihwkit 1.1.0's pure-PyTorch inference tile.

Scope (see NOTES.md for the arguments): ``AnalogConv2d`` (non-indexed path, 4-D input, zero
padding, groups=1) and ``AnalogLinear`` whose ``analog_module`` is a ``TorchInferenceTile`` or a
``TileModuleArray`` of them, fp32, ``AnalogMVType.ONE_PASS``.

Per tile (and per bound-management iteration) the work is

1. ``_input_kernel`` (Triton): patch gather (im2col straight from the strided NCHW input, zero
   padding), the tile's ``pre_forward`` (learned input range: clamp to +-|r|, divide by r),
   per-row noise management (NONE / ABS_MAX / MAX / CONSTANT incl. ``nm_thres`` and
   ``nm <= 0 -> 1``), bound-management reduction, input scaling, ``UniformQuantize`` and the
   +-inp_bound clamp, written once in exactly the layout stock aihwkit hands to ``matmul``;
   also the per-row output multiplier ``out_scale / scale`` and the all-zero-input flag.
2. the GEMM: ``AnalogMVM._matmul`` itself (``input @ weight.T``), same operand values, shapes
   and strides as stock -> the same ATen/cuBLAS call.
3. ``torch.randn_like`` on the GEMM output (the same draw, same generator, same shape).
4. ``_output_kernel`` (Triton): output noise, ``UniformQuantize``, bound test flag (device),
   clamp, rescale, the zero-input shortcut, ``post_forward`` (input range * mapping scales,
   drift-compensation alpha), learned out scaling, digital bias, the ``TileModuleArray``
   accumulation ``result.add_`` and the array bias, written into the final buffer.

Every floating-point operation is the one stock aihwkit performs, in the same order, each
rounded once (kernels are launched with ``enable_fp_fusion=False``; divisions use
``tl.math.div_rn``; round-half-to-even is done with exact fp32 additions); where ATen's CUDA and
CPU kernels differ (``tensor / python_scalar`` is ``tensor * (1/scalar)`` on CUDA) the kernel
does what the device's ATen does.

Under autograd the layer forward is a ``torch.autograd.Function`` whose backward replays stock's
autograd arithmetic bit for bit (see the "autograd" section below and NOTES.md).

Public: :func:`fused_supported`, :func:`fused_forward`, :func:`install`, :func:`uninstall`,
:func:`speculative`, :data:`STATS`, :data:`TUNE`, :class:`FusedStats`.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.nn.modules import module as _torch_module

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

__all__ = ["forward_if_supported", "speculate", "unspeculate", "is_speculative", "fused_supported", "fused_forward", "install", "uninstall", "speculative", "FusedStats", "STATS"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# noise-management modes of the kernel
_NM_SCALAR, _NM_ABS_MAX, _NM_MAX = 0, 1, 2
# input scaling / output rescale modes
_SC_NONE, _SC_SCALAR, _SC_ROW = 0, 1, 2
# drift-compensation alpha modes
_AL_NONE, _AL_PTR, _AL_SCALAR = 0, 1, 2


@dataclass
class FusedStats:
    """Counters (host side) of what the fused forward did; reset with :meth:`reset`."""

    tiles: int = 0
    iterations: int = 0
    host_syncs: int = 0
    zero_shortcuts: int = 0
    spec_forwards: int = 0
    spec_reruns: int = 0
    plan_builds: int = 0
    window_tiles: int = 0
    reasons: List[str] = field(default_factory=list)

    def reset(self) -> None:
        self.tiles = self.iterations = self.host_syncs = self.zero_shortcuts = 0
        self.spec_forwards = self.spec_reruns = self.plan_builds = self.window_tiles = 0
        self.reasons = []


STATS = FusedStats()

# debugging: set to a list to receive per-iteration intermediates (costs syncs and copies)
DEBUG: Optional[list] = None

# --------------------------------------------------------------------------------------------
# Triton helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _nanmax(a, b):
    """max that propagates NaN (as torch's max / amax reductions do)."""
    return tl.where((a > b) | (a != a), a, b)


@triton.jit
def _rint(q):
    """Round half to even, exactly (torch.round), with exact fp32 additions only.

    For |q| < 2^23, q + 2^23 (or q - 2^23) lies in [2^23, 2^24) where the fp32 spacing is 1, so
    the addition itself rounds q to the nearest integer, ties to even (2^23 is even); subtracting
    2^23 back is exact. |q| >= 2^23 (and inf / NaN) are returned unchanged (already integers).
    A zero result takes q's sign (rint(-0.3) = -0.0) via q * 0.0.
    """
    big = 8388608.0
    r = tl.where(q >= 0.0, (q + big) - big, (q - big) + big)
    r = tl.where(tl.abs(q) < big, r, q)
    r = tl.where(r == 0.0, q * 0.0, r)
    return r


@triton.jit
def _clamp(x, lo, hi):
    """torch.clamp(x, lo, hi) for lo <= hi: NaN passes through."""
    x = tl.where(x < lo, lo, x)
    x = tl.where(x > hi, hi, x)
    return x


@triton.jit
def _patch_block(
    x_ptr, row_base, ihb, iwb, row_ok, kk, K0, K_TILE,
    H, W, sxc, sxh, sxw, DH, DW, ir_ptr,
    KH: tl.constexpr, KW: tl.constexpr, HAS_IR: tl.constexpr, IDX64: tl.constexpr,
    BOUNDS: tl.constexpr, EVEN: tl.constexpr,
):
    """x patch block [BLOCK_M, BLOCK_K] (im2col, zero padding) + the tile's pre_forward.

    Column k of the tile is patch column K0 + k = (c, ki, kj) in unfold's order; the address is
    row_base[m] + koff[k] (per-row and per-column parts precomputed), the padding test
    0 <= ihb[m] + ki*DH < H (same for w)."""
    kmask = kk < K_TILE
    k = K0 + kk
    c = k // (KH * KW)
    rem = k % (KH * KW)
    kih = (rem // KW) * DH
    kiw = (rem % KW) * DW
    if IDX64:
        koff = c.to(tl.int64) * sxc + kih.to(tl.int64) * sxh + kiw.to(tl.int64) * sxw
    else:
        koff = c * sxc + kih * sxh + kiw * sxw
    ptrs = x_ptr + (row_base[:, None] + koff[None, :])
    if BOUNDS:  # zero padding by masking
        ih = ihb[:, None] + kih[None, :]
        iw = iwb[:, None] + kiw[None, :]
        ok = (row_ok[:, None] & kmask[None, :]) & ((ih >= 0) & (ih < H)) & ((iw >= 0) & (iw < W))
        x = tl.load(ptrs, mask=ok, other=0.0)
    elif EVEN:  # pre-padded input, whole blocks: no mask at all
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=row_ok[:, None] & kmask[None, :], other=0.0)
    if HAS_IR:
        r = tl.load(ir_ptr)
        ra = tl.abs(r)
        x = _clamp(x, -ra, ra)  # apply_input_range: clamp(x, -|r|, |r|)
        x = tl.math.div_rn(x, tl.zeros_like(x) + r)  # x / input_range (tensor division)
    return x, kmask


@triton.jit
def _block_nm(x, kmask, NM_MODE: tl.constexpr):
    """Per-row abs-max (NM_MODE 1) or max (2) of a block, NaN propagating like torch's max."""
    if NM_MODE == 1:
        v = tl.where(kmask[None, :], tl.abs(x), 0.0)
    else:
        v = tl.where(kmask[None, :], x, float("-inf"))
    # tl.max's combine is maxnum-like on the GPU: count NaNs separately
    isnan = tl.max((v != v).to(tl.int32), axis=1)
    return tl.where(isnan > 0, float("nan"), tl.max(v, axis=1))


@triton.jit
def _block_arg(x, kmask, kk, m, NM_MODE: tl.constexpr):
    """Index (tile column) of the first element equal to the row max m (or of the first NaN when m
    is NaN): the element ``max(-1)`` routes its gradient to (ATen: lowest index among ties)."""
    if NM_MODE == 1:
        v = tl.abs(x)
    else:
        v = x
    hit = ((v == m[:, None]) | ((v != v) & (m != m)[:, None])) & kmask[None, :]
    big = 2147483647
    return tl.min(tl.where(hit, kk[None, :], big), axis=1)


@triton.jit
def _prepare_block(
    x, s, scale_scalar, inp_res, inp_res_inv, inp_bound,
    SCALING: tl.constexpr, QUANT: tl.constexpr, RECIP_DIV: tl.constexpr, CLAMP: tl.constexpr,
):
    """AnalogMVM._prepare_input: scale, UniformQuantize, clamp (each op rounded once)."""
    if SCALING == 1:
        x = x * scale_scalar
    elif SCALING == 2:
        x = x * s[:, None]
    if QUANT:
        if RECIP_DIV:
            q = x * inp_res_inv  # CUDA ATen: tensor / cpu_scalar == tensor * (1/scalar)
        else:
            q = tl.math.div_rn(x, tl.zeros_like(x) + inp_res)
        q = _rint(q)
        x = q * inp_res
    if CLAMP:
        x = _clamp(x, -inp_bound, inp_bound)
    return x


@triton.jit
def _chanmax_kernel(
    x_ptr, a_ptr, HW, W, C0, C1, sxn, sxc, sxh, sxw,
    IDX64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """A[n, h, w] = max_{C0 <= c < C1} |x[n, c, h, w]| (NaN propagating; |.| makes -0.0 +0.0)."""
    pid_p = tl.program_id(0)
    n = tl.program_id(1)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    h = p // W
    w = p % W
    if IDX64:
        base = n.to(tl.int64) * sxn + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
    else:
        base = n * sxn + h * sxh + w * sxw
    cc = tl.arange(0, BLOCK_C)
    acc = tl.full([BLOCK_P], 0.0, tl.float32)
    for cb in range(C0, C1, BLOCK_C):
        c = cb + cc
        cm = c < C1
        if IDX64:
            coff = c.to(tl.int64) * sxc
        else:
            coff = c * sxc
        v = tl.load(x_ptr + (base[:, None] + coff[None, :]), mask=pmask[:, None] & cm[None, :], other=0.0)
        v = tl.abs(v)
        isnan = tl.max((v != v).to(tl.int32), axis=1)
        m = tl.where(isnan > 0, float("nan"), tl.max(v, axis=1))
        acc = _nanmax(acc, m)
    if IDX64:
        aoff = n.to(tl.int64) * HW + p
    else:
        aoff = n * HW + p
    tl.store(a_ptr + aoff, acc, mask=pmask)


@triton.jit
def _window_absmax(
    a_ptr, nb, ihb, iwb, row_ok, H, W, DH, DW, ir_ptr,
    KH: tl.constexpr, KW: tl.constexpr, HAS_IR: tl.constexpr,
):
    """Per-row abs-max of the patch over whole channels, from the channel abs-max map A:
    max over the KH x KW window of A (padding counts as |0| = 0, as in unfold). max is exact and
    order-free, so this equals ``u.abs().max(-1)`` of the patch row (NaN propagating). With a
    learned input range u = clamp(x, -|r|, |r|) / r is monotone in |x| elementwise, so the
    row max of |u| is the same map applied to the row max of |x|."""
    acc = tl.full(ihb.shape, 0.0, tl.float32)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            ih = ihb + i * DH
            iw = iwb + j * DW
            ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(a_ptr + (nb + ih * W + iw), mask=ok, other=0.0)
            acc = _nanmax(acc, v)
    if HAS_IR:
        r = tl.load(ir_ptr)
        ra = tl.abs(r)
        acc = _clamp(acc, -ra, ra)
        acc = tl.abs(tl.math.div_rn(acc, tl.zeros_like(acc) + r))
    return acc


@triton.jit
def _input_kernel(
    x_ptr, p_ptr, rowmult_ptr, flag_ptr, ir_ptr, amap_ptr, arg_ptr, nm0_ptr, s_ptr,
    M, L, OW, K_TILE, K0,
    H, W, sxn, sxc, sxh, sxw,
    spn, spl, spk,
    SH, SW, PH, PW, DH, DW,
    nm_thres, scale_scalar, inv_red, out_scale,
    inp_res, inp_res_inv, inp_bound,
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_IR: tl.constexpr, NM_MODE: tl.constexpr, NM_THRES_ON: tl.constexpr,
    ZERO_TEST: tl.constexpr, SCALING: tl.constexpr, STORE_ROWMULT: tl.constexpr,
    QUANT: tl.constexpr, RECIP_DIV: tl.constexpr, CLAMP: tl.constexpr, IDX64: tl.constexpr,
    SINGLE: tl.constexpr, BOUNDS: tl.constexpr, EVEN: tl.constexpr,
    NM_WINDOW: tl.constexpr, STORE_ARG: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    n = rows // L
    lidx = rows % L
    ihb = (lidx // OW) * SH - PH
    iwb = (lidx % OW) * SW - PW
    if IDX64:
        n = n.to(tl.int64)
        lidx = lidx.to(tl.int64)
        row_base = n * sxn + ihb.to(tl.int64) * sxh + iwb.to(tl.int64) * sxw
    else:
        row_base = n * sxn + ihb * sxh + iwb * sxw
    prow = n * spn + lidx * spl
    kk0 = tl.arange(0, BLOCK_K)

    if SINGLE:  # the tile's whole K in one block: gather once
        x, kmask = _patch_block(
            x_ptr, row_base, ihb, iwb, row_ok, kk0, K0, K_TILE,
            H, W, sxc, sxh, sxw, DH, DW, ir_ptr, KH, KW, HAS_IR, IDX64, BOUNDS, EVEN,
        )

    s = tl.full([BLOCK_M], 1.0, tl.float32)
    if NM_MODE != 0:
        if NM_WINDOW:  # whole channels: window max over the channel abs-max map (one gather pass)
            nb = n * (H * W)
            acc = _window_absmax(amap_ptr, nb, ihb, iwb, row_ok, H, W, DH, DW, ir_ptr, KH, KW, HAS_IR)
        elif SINGLE:
            acc = _block_nm(x, kmask, NM_MODE)
            if STORE_ARG:
                arg = _block_arg(x, kmask, kk0, acc, NM_MODE)
        else:
            if NM_MODE == 1:
                acc = tl.full([BLOCK_M], 0.0, tl.float32)
            else:
                acc = tl.full([BLOCK_M], float("-inf"), tl.float32)
            arg = tl.full([BLOCK_M], 2147483647, tl.int32)
            for kb in range(0, K_TILE, BLOCK_K):
                xb, kmb = _patch_block(
                    x_ptr, row_base, ihb, iwb, row_ok, kb + kk0, K0, K_TILE,
                    H, W, sxc, sxh, sxw, DH, DW, ir_ptr, KH, KW, HAS_IR, IDX64, BOUNDS, EVEN,
                )
                bm = _block_nm(xb, kmb, NM_MODE)
                if STORE_ARG:
                    barg = _block_arg(xb, kmb, kb + kk0, bm, NM_MODE)
                    take = (bm > acc) | ((bm != bm) & (acc == acc)) | (arg == 2147483647)
                    arg = tl.where(take, barg, arg)
                acc = _nanmax(acc, bm)
        if STORE_ARG:
            tl.store(nm0_ptr + rows, acc, mask=row_ok)
            if not NM_WINDOW:
                tl.store(arg_ptr + rows, arg, mask=row_ok)
        if NM_THRES_ON:
            acc = tl.where(acc > nm_thres, nm_thres, acc)  # clamp(nm, max=nm_thres)
        if ZERO_TEST:
            nz = tl.max(((acc != 0.0) & row_ok).to(tl.int32), axis=0)
            if nz > 0:
                tl.atomic_max(flag_ptr, nz)
        nm = tl.where(acc <= 0.0, 1.0, acc)  # nm[nm <= 0] = 1
        one = tl.full([BLOCK_M], 1.0, tl.float32)
        s = tl.math.div_rn(one, nm)  # 1.0 / nm  == nm.reciprocal() * 1.0
        s = s * inv_red  # scale /= reduction (a power of two: exact, = division)
        if STORE_ARG:
            tl.store(s_ptr + rows, s, mask=row_ok)
        if STORE_ROWMULT:
            mult = tl.math.div_rn(one, s) * out_scale  # out_scale / scale
            tl.store(rowmult_ptr + rows, mult, mask=row_ok)

    if SINGLE:
        x = _prepare_block(x, s, scale_scalar, inp_res, inp_res_inv, inp_bound,
                           SCALING, QUANT, RECIP_DIV, CLAMP)
        if EVEN:
            tl.store(p_ptr + (prow[:, None] + kk0[None, :] * spk), x)
        else:
            tl.store(p_ptr + (prow[:, None] + kk0[None, :] * spk), x, mask=row_ok[:, None] & kmask[None, :])
    else:
        for kb in range(0, K_TILE, BLOCK_K):
            kk = kb + kk0
            xb, kmb = _patch_block(
                x_ptr, row_base, ihb, iwb, row_ok, kk, K0, K_TILE,
                H, W, sxc, sxh, sxw, DH, DW, ir_ptr, KH, KW, HAS_IR, IDX64, BOUNDS, EVEN,
            )
            xb = _prepare_block(xb, s, scale_scalar, inp_res, inp_res_inv, inp_bound,
                                SCALING, QUANT, RECIP_DIV, CLAMP)
            if EVEN:
                tl.store(p_ptr + (prow[:, None] + kk[None, :] * spk), xb)
            else:
                tl.store(p_ptr + (prow[:, None] + kk[None, :] * spk), xb, mask=row_ok[:, None] & kmb[None, :])


@triton.jit
def _output_kernel(
    y_ptr, noise_ptr, rowmult_ptr, zflag_ptr, bflag_ptr, y1_ptr,
    acc_ptr, dst_ptr,
    ir_ptr, ms_ptr, ms_stride, alpha_ptr, alpha_val, osa_ptr, osa_stride, tbias_ptr, abias_ptr,
    M, O_TILE, O0, ld_dst,
    out_noise, out_res, out_res_inv, out_bound, mult_scalar,
    HAS_NOISE: tl.constexpr, QUANT: tl.constexpr, RECIP_DIV: tl.constexpr,
    BM_TEST: tl.constexpr, CLAMP: tl.constexpr, RESCALE: tl.constexpr, ZERO_TEST: tl.constexpr,
    ZERO_MARKS_BAD: tl.constexpr, STORE_Y1: tl.constexpr,
    HAS_IR: tl.constexpr, HAS_MS: tl.constexpr, ALPHA: tl.constexpr, HAS_OSA: tl.constexpr,
    HAS_TBIAS: tl.constexpr, HAS_ACC: tl.constexpr, HAS_ABIAS: tl.constexpr,
    IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_o = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    rmask = rows < M
    cmask = cols < O_TILE
    mask = rmask[:, None] & cmask[None, :]
    if IDX64:
        rows64 = rows.to(tl.int64)
    else:
        rows64 = rows
    yoff = rows64[:, None] * O_TILE + cols[None, :]
    y = tl.load(y_ptr + yoff, mask=mask, other=0.0)
    if HAS_NOISE:
        nz = tl.load(noise_ptr + yoff, mask=mask, other=0.0)
        y = y + nz * out_noise  # out += out_noise * randn_like(out)
    if QUANT:
        if RECIP_DIV:
            q = y * out_res_inv
        else:
            q = tl.math.div_rn(y, tl.zeros_like(y) + out_res)
        q = _rint(q)
        y = q * out_res
    if STORE_Y1:  # backward: the clamp's input (its gradient mask) and, clamped, the rescale's input
        tl.store(y1_ptr + yoff, y, mask=mask)
    if BM_TEST:
        bad = (~((y <= out_bound) & (y >= -out_bound))) & mask
        anybad = tl.max(tl.max(bad.to(tl.int32), axis=1), axis=0)
        if anybad > 0:
            tl.atomic_max(bflag_ptr, anybad)
    if CLAMP:
        y = _clamp(y, -out_bound, out_bound)
    if RESCALE == 1:
        y = y * mult_scalar
    elif RESCALE == 2:
        rm = tl.load(rowmult_ptr + rows, mask=rmask, other=1.0)
        y = y * rm[:, None]
    if ZERO_TEST:
        zf = tl.load(zflag_ptr)
        allzero = zf == 0
        y = tl.where(allzero, tl.zeros_like(y), y)  # stock returns zeros(out_size) from matmul
        if ZERO_MARKS_BAD:  # speculative mode: an all-zero input means "redo exactly"
            if (zf == 0) & (pid_m == 0) & (pid_o == 0):
                tl.atomic_max(bflag_ptr, 1)
    # post_forward
    if HAS_IR:
        r = tl.load(ir_ptr)
        if HAS_MS:
            ms = tl.load(ms_ptr + cols * ms_stride, mask=cmask, other=1.0)
            y = y * (r * ms)[None, :]  # scale = input_range * mapping_scales
        else:
            y = y * r
    elif HAS_MS:
        ms = tl.load(ms_ptr + cols * ms_stride, mask=cmask, other=1.0)
        y = y * ms[None, :]
    if ALPHA == 1:
        y = y * tl.load(alpha_ptr)
    elif ALPHA == 2:
        y = y * alpha_val
    # apply_out_scaling
    if HAS_OSA:
        osa = tl.load(osa_ptr + cols * osa_stride, mask=cmask, other=1.0)
        y = y * osa[None, :]
    if HAS_TBIAS:
        tb = tl.load(tbias_ptr + cols, mask=cmask, other=0.0)
        y = y + tb[None, :]
    doff = rows64[:, None] * ld_dst + (O0 + cols)[None, :]
    if HAS_ACC:
        a = tl.load(acc_ptr + doff, mask=mask, other=0.0)
        y = a + y  # result.add_(cat(out_result))
    if HAS_ABIAS:
        ab = tl.load(abias_ptr + O0 + cols, mask=cmask, other=0.0)
        y = y + ab[None, :]
    tl.store(dst_ptr + doff, y, mask=mask)


# --------------------------------------------------------------------------------------------
# support checks
# --------------------------------------------------------------------------------------------


def _has_hooks(mod: torch.nn.Module) -> bool:
    return bool(
        mod._forward_hooks
        or mod._forward_pre_hooks
        or mod._backward_hooks
        or getattr(mod, "_backward_pre_hooks", None)
        or "forward" in mod.__dict__
    )


def _global_hooks() -> bool:
    return bool(
        _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or getattr(_torch_module, "_global_backward_pre_hooks", None)
    )


def _tiles_grid(mod: torch.nn.Module):
    """(rows of tiles, in_sizes, out_sizes, array bias or None)."""
    if type(mod) is TileModuleArray:  # pylint: disable=unidiomatic-typecheck
        return [list(row) for row in mod.array], list(mod.in_sizes), list(mod.out_sizes), mod.bias
    return [[mod]], [mod.in_size], [mod.out_size], None


def _f32_or_none(t: Any, what: str) -> Optional[str]:
    if t is None:
        return None
    if not isinstance(t, Tensor):
        return f"{what} is {type(t).__name__}, not a tensor"
    if t.dtype != torch.float32:
        return f"{what} dtype {t.dtype}"
    return None


def _tile_reason(tile: Any, training: bool) -> Optional[str]:
    if type(tile) is not TorchInferenceTile:  # pylint: disable=unidiomatic-typecheck
        return f"tile class {type(tile).__name__}"
    sim = getattr(tile, "tile", None)
    if type(sim) is not TorchSimulatorTile:  # pylint: disable=unidiomatic-typecheck
        return f"simulator tile {type(sim).__name__}"
    if getattr(sim, "_analog_mvm", None) is not AnalogMVM:
        return "custom analog MVM"
    if tile.in_trans or tile.out_trans or tile.analog_bias:
        return "transposed / analog-bias tile"
    if _has_hooks(tile):
        return "hooks on a tile"
    if hasattr(tile.rpu_config.pre_post, "periph_quant"):
        return "quantized periphery"
    io = tile.rpu_config.forward
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return "perfect / ideal forward"
    if io.mv_type != AnalogMVType.ONE_PASS:
        return f"mv_type {io.mv_type}"
    if io.inp_noise > 0.0:
        return "inp_noise > 0 (random numbers drawn on the input)"
    if io.inp_asymmetry != 0.0 or io.out_asymmetry != 0.0:
        return "input / output asymmetry"
    if io.inp_sto_round or io.out_sto_round:
        return "stochastic rounding"
    if io.inp_res > 0 and io.inp_bound <= 0:
        return "input quantisation without input bound"
    if io.out_res > 0 and io.out_bound <= 0:
        return "output quantisation without output bound"
    if io.noise_management not in (
        NoiseManagementType.NONE,
        NoiseManagementType.ABS_MAX,
        NoiseManagementType.MAX,
        NoiseManagementType.CONSTANT,
    ):
        return f"noise management {io.noise_management}"
    if io.bound_management not in (BoundManagementType.NONE, BoundManagementType.ITERATIVE):
        return f"bound management {io.bound_management}"
    if sim.out_noise_values is not None:
        return "per-column output noise (out_noise_std > 0)"
    if sim.weight.dtype != torch.float32 or sim.weight.ndim != 2:
        return "weight not a 2-D fp32 tensor"
    for what, t in (
        ("mapping_scales", tile.mapping_scales),
        ("input_range", tile.input_range),
        ("out_scaling_alpha", tile.out_scaling_alpha),
        ("bias", tile.bias if tile.digital_bias else None),
    ):
        r = _f32_or_none(t, what)
        if r is not None:
            return r
    drift = getattr(tile.rpu_config, "drift_compensation", None)
    if drift is not None and not training:
        alpha = tile.alpha
        if isinstance(alpha, Tensor):
            if alpha.dtype != torch.float32 or alpha.numel() != 1:
                return "drift alpha not a 1-element fp32 tensor"
        elif not isinstance(alpha, Number):
            return "drift alpha of unknown type"
    if training:
        mod = tile.rpu_config.modifier
        if mod.type not in _FUSED_MODIFIERS:
            return f"training-mode weight modifier {mod.type}"
        if getattr(mod, "per_batch_sample", False):
            return "per-batch-sample weight modifier (3-D weights)"
        if tile.input_range is not None:
            irp = tile.rpu_config.pre_post.input_range
            idx = tile.input_range_update_idx
            if irp.init_from_data > 0 and _ir_still_initialising(idx, irp.init_from_data):
                return "input range still initialised from data (layout-dependent std; stock path)"
    return None


# weight modifiers whose training-mode draw is aihwkit's own modify_weight, called in stock's order
_FUSED_MODIFIERS = (
    WeightModifierType.NONE, WeightModifierType.COPY, WeightModifierType.ADD_NORMAL,
    WeightModifierType.MULT_NORMAL, WeightModifierType.DISCRETIZE,
)


def _ir_still_initialising(idx: Tensor, init_from_data: int) -> bool:
    """``input_range_update_idx < init_from_data`` (a device read, cached per tensor version: the
    counter only grows during training, and load_state_dict / copy_ bump the version)."""
    key = (idx._version, init_from_data)
    cached = idx.__dict__.get("_fused_ir_init") if hasattr(idx, "__dict__") else None
    if cached is not None and cached[0] == key and not cached[1]:
        return False
    still = bool(idx.detach().reshape(-1)[0] < init_from_data)
    try:
        idx.__dict__["_fused_ir_init"] = (key, still)
    except (AttributeError, TypeError):
        pass
    return still


def _grad_reason(tile: Any) -> Optional[str]:
    """Why a tile's backward cannot be replayed bit for bit (None: it can)."""
    if tile.mapping_scales is not None and tile.mapping_scales.requires_grad:
        return "autograd: mapping scales requiring grad"
    drift = getattr(tile.rpu_config, "drift_compensation", None)
    if drift is not None and not tile.training and isinstance(tile.alpha, Tensor) and tile.alpha.requires_grad:
        return "autograd: drift alpha requiring grad"
    if tile.input_range is not None and tile.input_range.requires_grad:
        irp = tile.rpu_config.pre_post.input_range
        if irp.manage_output_clipping:
            return "autograd: manage_output_clipping (aihwkit raises)"
        if tile.input_range.numel() != 1:
            return "autograd: input range not a scalar"
    if tile.tile.weight.requires_grad and tile.tile.weight.ndim != 2:
        return "autograd: weight not 2-D"
    return None


def fused_supported(layer: torch.nn.Module, x: Optional[Tensor] = None) -> Optional[str]:
    """None if :func:`fused_forward` computes ``layer(x)`` exactly, else the reason why not.

    Without ``x`` only the layer is checked; with ``x`` also the input and the grad mode.
    """
    cls = type(layer)
    if cls not in (AnalogConv2d, AnalogLinear):
        return f"layer class {cls.__name__}"
    if _has_hooks(layer.analog_module) or _global_hooks():
        return "module hooks"
    if cls is AnalogConv2d:
        if layer.groups != 1:
            return "groups != 1"
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return "padding mode"
        if getattr(layer, "NEEDS_INDEXED", False):
            return "indexed convolution"
        use_indexed = layer.use_indexed
        if use_indexed is None:
            use_indexed = layer.analog_module.is_cuda
        if use_indexed:
            return "indexed convolution"
    mod = layer.analog_module
    if type(mod) not in (TileModuleArray, TorchInferenceTile):  # pylint: disable=unidiomatic-typecheck
        return f"analog module {type(mod).__name__}"
    if type(mod) is TileModuleArray and mod.bias is not None:  # pylint: disable=unidiomatic-typecheck
        r = _f32_or_none(mod.bias, "array bias")
        if r:
            return r
    grid, _, _, _ = _tiles_grid(mod)
    needs = torch.is_grad_enabled() and (
        (x is not None and x.requires_grad) or any(p.requires_grad for p in layer.parameters())
    )
    for row in grid:
        for tile in row:
            r = _tile_reason(tile, tile.training)
            if r is not None:
                return r
            if tile.training and not needs:
                return "training-mode tiles without autograd (stock only)"
            if needs:
                r = _grad_reason(tile)
                if r is not None:
                    return r
    if needs:
        _, why = _grad_rules()
        if why is not None:
            return why
        if cls is AnalogLinear and x is not None and (x.dim() != 2 or not x.is_contiguous()):
            return "autograd: linear input not a contiguous 2-D tensor"
        if type(mod) is TileModuleArray and getattr(mod, "bias", None) is not None:  # pylint: disable=unidiomatic-typecheck
            pass
    if x is not None:
        if x.dtype != torch.float32:
            return f"input dtype {x.dtype}"
        if cls is AnalogConv2d and x.dim() != 4:
            return "conv input not 4-D"
        if cls is AnalogLinear and x.dim() < 2:
            return "linear input of dim < 2"
        if x.device.type == "cpu" and not _INTERPRET:
            return "CPU tensor without TRITON_INTERPRET=1"
        if x.device.type not in ("cpu", "cuda"):
            return f"device {x.device.type}"
        if x.numel() == 0:
            return "empty input"
    return None


# --------------------------------------------------------------------------------------------
# launch helpers
# --------------------------------------------------------------------------------------------




def _f32(v: float) -> float:
    return float(np.float32(v))


def _recip_f32(v: float) -> float:
    """The multiplier ATen's CUDA kernels use for ``tensor / python_scalar``: the reciprocal of
    the *double* scalar, rounded once to fp32 (measured on torch 2.11 / H200: for res = 2/126 it
    is 63.0 = fp32(1/res), not fp32(1)/fp32(res) = 62.999996; see NOTES.md)."""
    return float(np.float32(1.0 / v))


def _pow2_block(n: int, lo: int, hi: int) -> int:
    b = lo
    while b < n and b < hi:
        b *= 2
    return b


_LAUNCH_KW = {} if _INTERPRET else {"enable_fp_fusion": False}

# launch configuration (the benchmark sweeps it; the numbers never depend on it)
TUNE_DEFAULT = {
    "in_block_m": 128 if _INTERPRET else 64,
    "in_block_k": None,  # None: see _kblock
    "in_single_max_k": 32,  # gather the tile's whole K in one block up to this (pow2-padded) K
    "in_warps": 4,
    # zero-pad the conv input once instead of masking the gather: True / False / "auto"
    # (H200, ResNet-32 b512: PCM 16.2 ms with vs 20.8 without; HWA graph 11.8 with vs 11.1 without)
    "prepad": "auto",
    "nm_window": True,  # ABS_MAX per row from a channel abs-max map (see _use_window)
    "map_block_p": 64,
    "out_block_m": 128 if _INTERPRET else 64,
    "out_warps": 4,
}
TUNE = dict(TUNE_DEFAULT)


def _kblock(k: int) -> Tuple[int, bool]:
    """(BLOCK_K, single pass) for a tile of K inputs."""
    if TUNE["in_block_k"]:
        bk = TUNE["in_block_k"]
        return bk, bk >= k
    p2 = _pow2_block(k, 16, 1 << 20)
    if p2 <= TUNE["in_single_max_k"]:
        return p2, True
    for b in (64, 32, 16):  # a block dividing K (no masked lanes) if possible
        if k % b == 0:
            return b, False
    return 64, False


_I32_LIMIT = 2**31 - 2**20


@dataclass
class _Geom:
    """Patch geometry: rows m = (n, l), l = (oh, ow); K columns = (c, ki, kj)."""

    n: int
    l: int
    ow: int
    h: int
    w: int
    sx: Tuple[int, int, int, int]
    kh: int
    kw: int
    st: Tuple[int, int]
    pad: Tuple[int, int]
    dil: Tuple[int, int]
    conv: bool
    lead: Tuple[int, ...] = ()
    idx64: bool = False

    @property
    def m(self) -> int:
        return self.n * self.l


def _geometry(layer: torch.nn.Module, x: Tensor) -> Tuple[_Geom, Tensor]:
    if type(layer) is AnalogConv2d:  # pylint: disable=unidiomatic-typecheck
        n, _, h, w = x.shape
        kh, kw = layer.kernel_size
        sh, sw = layer.stride
        ph, pw = layer.padding
        dh, dw = layer.dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        span = sum(abs(st) * (sz + 2 * pd) for st, sz, pd in zip(x.stride(), x.shape, (0, 0, ph, pw)))
        k = layer.in_features
        geom = _Geom(n, oh * ow, ow, h, w, tuple(x.stride()), kh, kw, (sh, sw), (ph, pw), (dh, dw), True)
        geom.idx64 = span >= _I32_LIMIT or geom.m * max(k, layer.out_features) >= _I32_LIMIT
        return geom, x
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    lead = tuple(x.shape[:-1])
    geom = _Geom(x2.shape[0], 1, 1, 1, 1, (x2.stride(0), x2.stride(1), 0, 0), 1, 1, (1, 1), (0, 0),
                 (1, 1), False, lead)
    span = abs(x2.stride(0)) * x2.shape[0] + abs(x2.stride(1)) * k
    geom.idx64 = span >= _I32_LIMIT or geom.m * max(k, layer.out_features) >= _I32_LIMIT
    return geom, x2


def _tile_fp(tile: Any) -> tuple:
    """Everything about a tile that the cached launch plan depends on (identity of the config
    objects and tensors, the values of every forward IO field, modes, hooks)."""
    sim = tile.tile
    io = tile.rpu_config.forward
    alpha = getattr(tile, "alpha", None)
    alpha_val = None
    if isinstance(alpha, Tensor):
        if alpha.device.type == "cpu":
            alpha_val = float(alpha.reshape(-1)[0]) if alpha.numel() else None
    elif alpha is not None:
        alpha_val = alpha
    w = sim.weight
    return (
        id(tile), tile.training, id(tile.rpu_config), id(io), tuple(io.__dict__.values()),
        id(tile.input_range), id(tile.mapping_scales), id(tile.out_scaling_alpha), id(tile.bias),
        tile.digital_bias, id(alpha), alpha_val, id(w), w.requires_grad, id(sim.out_noise_values),
        id(getattr(tile.rpu_config, "drift_compensation", None)), id(sim), id(getattr(sim, "_analog_mvm", None)),
        len(tile._forward_hooks), len(tile._forward_pre_hooks), "forward" in tile.__dict__,
        tuple(getattr(t, "requires_grad", None) for t in (tile.input_range, tile.out_scaling_alpha, tile.bias)),
        id(tile.rpu_config.modifier), tuple(vars(tile.rpu_config.modifier).values()),
        _ir_fp(tile), id(AnalogMVM.__dict__.get("_prepare_input")),
    )


def _ir_fp(tile: Any) -> tuple:
    """Input-range settings the plan depends on (gradient parameters, the data-init state)."""
    if tile.input_range is None:
        return ()
    irp = tile.rpu_config.pre_post.input_range
    idx = getattr(tile, "input_range_update_idx", None)
    state = None
    if tile.training and idx is not None and irp.init_from_data > 0:
        state = _ir_still_initialising(idx, irp.init_from_data)
    return (id(irp), tuple(vars(irp).values()), id(idx), state)


class _TileRun:
    """One tile's static launch configuration (host side, no device reads)."""

    def __init__(self, tile: TorchInferenceTile, device: torch.device):
        sim = tile.tile
        sim.set_config(tile.rpu_config)  # as TorchInferenceTile.forward
        self.tile = tile
        self.rpu_config = tile.rpu_config
        self.io = io = sim._f_io
        self.weight = sim.weight
        self.is_test = not tile.training
        self.nm_type = io.noise_management
        self.b_management = io.bound_management != BoundManagementType.NONE
        self.n_management = io.noise_management != NoiseManagementType.NONE
        self.ir = tile.input_range
        self.ms = tile.mapping_scales
        self.osa = tile.out_scaling_alpha
        self.tbias = tile.bias if tile.digital_bias else None
        drift = getattr(tile.rpu_config, "drift_compensation", None)
        self.alpha_mode, self.alpha_ptr, self.alpha_val = _AL_NONE, None, 1.0
        if self.is_test and drift is not None:
            alpha = tile.alpha
            if isinstance(alpha, Tensor):
                if alpha.device == device:
                    self.alpha_mode, self.alpha_ptr = _AL_PTR, alpha
                elif alpha.device.type == "cpu":  # a CPU scalar operand: x * float(alpha)
                    self.alpha_mode, self.alpha_val = _AL_SCALAR, float(alpha.item())
                else:
                    self.alpha_mode, self.alpha_ptr = _AL_PTR, alpha.to(device)
            else:
                self.alpha_mode, self.alpha_val = _AL_SCALAR, float(alpha)
        if self.nm_type == NoiseManagementType.ABS_MAX:
            self.nm_mode = _NM_ABS_MAX
        elif self.nm_type == NoiseManagementType.MAX:
            self.nm_mode = _NM_MAX
        else:
            self.nm_mode = _NM_SCALAR
        if self.nm_type == NoiseManagementType.CONSTANT:
            self.nm_scalar = io.nm_thres if io.nm_thres > 0.0 else 1.0
        else:
            self.nm_scalar = 1.0
        self.zero_test = self.nm_mode != _NM_SCALAR  # (and inp_noise <= 0: checked)
        res = io.inp_res
        self.inp_quant = res > 0
        if self.inp_quant:
            res = 1 / res if res > 1.0 else res
            res *= 2 * io.inp_bound
            self.inp_res, self.inp_res_inv = _f32(res), _recip_f32(res)
        else:
            self.inp_res = self.inp_res_inv = 1.0
        self.inp_clamp = io.inp_bound > 0
        self.inp_bound = _f32(io.inp_bound) if self.inp_clamp else 0.0
        ores = io.out_res
        self.out_quant = ores > 0
        if self.out_quant:
            ores = 1 / ores if ores > 1.0 else ores
            ores *= 2 * io.out_bound
            self.out_res, self.out_res_inv = _f32(ores), _recip_f32(ores)
        else:
            self.out_res = self.out_res_inv = 1.0
        self.out_clamp = io.out_bound > 0
        self.out_bound = _f32(io.out_bound) if self.out_clamp else 0.0
        inp_res_bm = io.inp_res
        if inp_res_bm > 0:
            inp_res_bm = 1 / inp_res_bm if inp_res_bm > 1.0 else inp_res_bm
            inp_res_bm *= 2.0 * io.inp_bound
        self.inp_res_bm = inp_res_bm
        self.nm_thres = _f32(io.nm_thres) if io.nm_thres > 0.0 else 0.0
        self.out_noise = _f32(io.out_noise)
        self.has_noise = io.out_noise > 0.0
        self.ms_stride = 1 if (self.ms is not None and self.ms.numel() > 1) else 0
        self.osa_stride = 1 if (self.osa is not None and self.osa.numel() > 1) else 0
        self._consts: dict = {}

    def bm_stop(self, red: float) -> bool:
        io = self.io
        return (red > io.max_bm_factor) or (
            (self.inp_res_bm > 0.0) and (red > io.max_bm_res / self.inp_res_bm)
        )

    def consts(self, red: float) -> tuple:
        """(SCALING, scale_f32, RESCALE, mult_f32, inv_red_f32, stop) of stock's ``scale`` /
        ``scaling`` / ``output *= out_scale / scale`` for this bound-management reduction."""
        got = self._consts.get(red)
        if got is not None:
            return got
        out_scale = self.io.out_scale
        stop = self.b_management and self.bm_stop(red)
        if self.nm_mode != _NM_SCALAR:  # a per-row tensor scale: scaling is True
            got = (_SC_ROW, 1.0, _SC_ROW, 1.0, _f32(1.0 / red), stop)
        else:
            scale = 1.0
            scaling = False
            if self.b_management:
                if self.n_management:
                    scale /= self.nm_scalar
                    scaling = not scale == 1.0
                scale /= red
                scaling = not scale == 1.0
            elif self.n_management:
                scale = scale / self.nm_scalar
                scaling = not scale == 1.0
            sc_mode = _SC_SCALAR if scaling else _SC_NONE
            if scaling or out_scale != 1.0:
                got = (sc_mode, _f32(scale), _SC_SCALAR, _f32(out_scale / scale), 1.0, stop)
            else:
                got = (sc_mode, _f32(scale), _SC_NONE, 1.0, 1.0, stop)
        self._consts[red] = got
        return got


def _matmul_folds(p_ndim: int, weight: Tensor) -> bool:
    """Whether ATen's matmul(P [N, L, K], weight.T) folds P into a contiguous [-1, K] matrix and
    calls mm (then P's own layout does not matter): when weight.T requires grad (a view of the
    Parameter keeps requires_grad even under no_grad)."""
    return p_ndim >= 3 and weight.requires_grad


def _prepared_buffer(geom: _Geom, ki: int, fold: bool, x_slice_like: Optional[Tensor], device):
    """The prepared-input tensor, with exactly the strides of stock's ``clone`` (or contiguous
    where ATen's matmul folds it into a contiguous [-1, K] mm anyway).

    Returns (tensor handed to matmul, (spn, spl, spk) element strides for the kernel)."""
    if geom.conv:
        n, l = geom.n, geom.l
        if fold:
            buf = torch.empty((n, l, ki), dtype=torch.float32, device=device)
        else:  # unfold(...).transpose(-1, -2)[..., k0:k0+ki].clone(): strides (ki*L, 1, L)
            buf = torch.empty((n, ki, l), dtype=torch.float32, device=device).transpose(1, 2)
        st = buf.stride()
        return buf, (st[0], st[1], st[2])
    if fold or x_slice_like is None:
        buf = torch.empty(geom.lead + (ki,), dtype=torch.float32, device=device)
        return buf, (ki, 0, 1)
    buf = torch.empty_like(x_slice_like)  # preserve_format, exactly as clone()
    st = buf.stride()
    return buf, (st[0], 0, st[1])


class _FlagPool:
    """Zeroed int32 flag pairs [nonzero input, bound test failed]; one memset per 64 pairs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buf: Optional[Tensor] = None
        self.pos = 0

    def take(self) -> Tensor:
        if self.buf is None or self.pos + 2 > self.buf.numel():
            self.buf = torch.zeros(128, dtype=torch.int32, device=self.device)
            self.pos = 0
        out = self.buf[self.pos : self.pos + 2]
        self.pos += 2
        return out


class _Session:
    """Speculative model forward: every tile runs its first bound-management iteration only and
    flags (on the device) whether stock would have done anything else (another iteration, or the
    all-zero-input shortcut); one host read at the end decides whether to redo exactly."""

    def __init__(self):
        self.bad: Optional[Tensor] = None
        self.pool: Optional[_FlagPool] = None

    def bad_flag(self, device: torch.device) -> Tensor:
        if self.bad is None:
            self.bad = torch.zeros(1, dtype=torch.int32, device=device)
        return self.bad

    def flags(self, device: torch.device) -> Tensor:
        if self.pool is None:
            self.pool = _FlagPool(device)
        return self.pool.take()


_SESSION: Optional[_Session] = None


def _use_window(tr: "_TileRun", geom: "_Geom", k0: int, ki: int) -> bool:
    """Per-row ABS_MAX from the channel abs-max map (one gather pass instead of two): conv, the
    tile's K range made of whole channels, and a K too large for the single-block path."""
    khw = geom.kh * geom.kw
    return (
        TUNE["nm_window"] and geom.conv and tr.nm_mode == _NM_ABS_MAX and not _kblock(ki)[1]
        and k0 % khw == 0 and ki % khw == 0
    )


def _channel_absmax_map(x: Tensor, geom: "_Geom", c0: int, c1: int) -> Tensor:
    """[N, H, W] map max_{c0 <= c < c1} |x| (one read of x's channel range)."""
    amap = torch.empty((geom.n, geom.h, geom.w), dtype=torch.float32, device=x.device)
    hw = geom.h * geom.w
    block_p = TUNE["map_block_p"]
    block_c = _pow2_block(c1 - c0, 4, 32)
    _chanmax_kernel[(triton.cdiv(hw, block_p), geom.n)](
        x, amap, hw, geom.w, c0, c1, *geom.sx,
        IDX64=geom.idx64, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4, **_LAUNCH_KW,
    )
    return amap


def _run_tile(
    tr: _TileRun, x: Tensor, geom: _Geom, k0: int, ki: int, o0: int, oj: int,
    acc: Optional[Tensor], dst: Tensor, abias: Optional[Tensor], x_slice_like: Optional[Tensor],
    allow_sync: bool, cache: dict, session: Optional[_Session], grad: Optional[dict] = None,
) -> None:
    """One tile's forward (incl. bound-management iterations) into dst[:, o0:o0+oj]."""
    # pylint: disable=too-many-locals, too-many-branches, too-many-statements
    device = x.device
    m = geom.m
    io = tr.io
    on_cuda = device.type == "cuda"
    dummy = dst
    STATS.tiles += 1
    fold = _matmul_folds(3 if geom.conv else len(geom.lead) + 1, tr.weight)
    block_k, single = _kblock(ki)
    red = 0.5
    passed = False
    first = True
    rng = None
    while not passed:
        red *= 2.0
        STATS.iterations += 1
        sc_mode, scale_f, rs_mode, mult_f, inv_red, stop = tr.consts(red)
        zero_test = first and tr.zero_test
        bm_test = tr.b_management and not stop
        flags = None
        if session is not None:
            flags = session.flags(device) if zero_test else None
            bflag = session.bad_flag(device) if (bm_test or zero_test) else None
        else:
            if zero_test or bm_test:
                flags = cache["flags"].take()
            bflag = flags[1:] if flags is not None else None
        key = (k0, ki, red, id(io))
        if grad is None and tr.ir is None and key in cache:  # same in-split, same prepared input (other out-tile)
            pbuf, rowmult, zsrc = cache[key]
            if zero_test and zsrc is not None:
                flags[0:1].copy_(zsrc[0:1])
        else:
            pbuf, (spn, spl, spk) = _prepared_buffer(geom, ki, fold, x_slice_like, device)
            rowmult = torch.empty(m, dtype=torch.float32, device=device) if rs_mode == _SC_ROW else None
            block_m = TUNE["in_block_m"]
            window = grad is None and _use_window(tr, geom, k0, ki)
            amap = None
            if window:
                STATS.window_tiles += 1
                akey = ("amap", k0, ki)
                amap = cache.get(akey)
                if amap is None:
                    amap = _channel_absmax_map(x, geom, k0 // (geom.kh * geom.kw), (k0 + ki) // (geom.kh * geom.kw))
                    cache[akey] = amap
            g_arg = g_nm0 = g_s = None
            if grad is not None and tr.nm_mode != _NM_SCALAR:
                g_arg, g_nm0, g_s = grad["arg"], grad["nm0"], grad["s"]
            _input_kernel[(triton.cdiv(m, block_m),)](
                x, pbuf, dummy if rowmult is None else rowmult, dummy if flags is None else flags,
                dummy if tr.ir is None else tr.ir, dummy if amap is None else amap,
                dummy if g_arg is None else g_arg, dummy if g_nm0 is None else g_nm0,
                dummy if g_s is None else g_s,
                m, geom.l, geom.ow, ki, k0,
                geom.h, geom.w, *geom.sx,
                spn, spl, spk,
                *geom.st, *geom.pad, *geom.dil,
                tr.nm_thres, scale_f, inv_red, _f32(io.out_scale),
                tr.inp_res, tr.inp_res_inv, tr.inp_bound,
                KH=geom.kh, KW=geom.kw,
                HAS_IR=tr.ir is not None, NM_MODE=tr.nm_mode,
                NM_THRES_ON=tr.nm_mode != _NM_SCALAR and io.nm_thres > 0.0,
                ZERO_TEST=zero_test, SCALING=sc_mode, STORE_ROWMULT=rs_mode == _SC_ROW,
                QUANT=tr.inp_quant, RECIP_DIV=on_cuda, CLAMP=tr.inp_clamp, IDX64=geom.idx64,
                SINGLE=single, BOUNDS=geom.pad != (0, 0),
                EVEN=(m % block_m == 0) and (ki % block_k == 0),
                NM_WINDOW=window, STORE_ARG=g_arg is not None,
                BLOCK_M=block_m, BLOCK_K=block_k, num_warps=TUNE["in_warps"],
                **_LAUNCH_KW,
            )
            if tr.ir is None and grad is None:
                cache[key] = (pbuf, rowmult, flags if zero_test else None)

        zero_now = False
        if zero_test and session is None and not on_cuda:
            STATS.host_syncs += 1  # CPU: reading the flag costs nothing
            zero_now = int(flags[0].item()) == 0
        y1 = None
        if zero_now:
            y = torch.zeros((m, oj), dtype=torch.float32, device=device)
            noise = None
        elif grad is not None:
            # stock's own GEMM call under autograd, on a leaf holding the prepared input: its
            # backward (mm / bmm, strides, weight-modifier graph) is then autograd's own
            with torch.enable_grad():
                p_leaf = pbuf.detach().requires_grad_(grad["need_p"])
                y_g = AnalogMVM._matmul(grad["w_used"], p_leaf, trans=False)
            grad.update(p_leaf=p_leaf, y=y_g, pbuf=pbuf)
            y = y_g.detach()
            if y.dim() != 2:
                y = y.reshape(-1, oj)
            y1 = torch.empty((m, oj), dtype=torch.float32, device=device)
        else:
            y = AnalogMVM._matmul(tr.weight, pbuf, trans=False)
            if y.dim() != 2:
                y = y.reshape(-1, oj)  # contiguous [..., O] -> a view
        if not zero_now:
            if zero_test and on_cuda and session is None:
                rng = torch.cuda.get_rng_state(device)
            noise = torch.randn_like(y) if tr.has_noise else None
        block_mo = TUNE["out_block_m"]
        block_o = _pow2_block(oj, 16, 64)
        _output_kernel[(triton.cdiv(m, block_mo), triton.cdiv(oj, block_o))](
            y, dummy if noise is None else noise, dummy if rowmult is None else rowmult,
            dummy if flags is None else flags, dummy if bflag is None else bflag,
            dummy if y1 is None else y1,
            dummy if acc is None else acc, dst,
            dummy if tr.ir is None else tr.ir,
            dummy if tr.ms is None else tr.ms, tr.ms_stride,
            dummy if tr.alpha_ptr is None else tr.alpha_ptr, _f32(tr.alpha_val),
            dummy if tr.osa is None else tr.osa, tr.osa_stride,
            dummy if tr.tbias is None else tr.tbias, dummy if abias is None else abias,
            m, oj, o0, dst.shape[1],
            tr.out_noise, tr.out_res, tr.out_res_inv, tr.out_bound, mult_f,
            HAS_NOISE=noise is not None, QUANT=tr.out_quant and not zero_now, RECIP_DIV=on_cuda,
            BM_TEST=bm_test and not zero_now, CLAMP=tr.out_clamp and not zero_now,
            RESCALE=_SC_NONE if zero_now else rs_mode, ZERO_TEST=zero_test,
            ZERO_MARKS_BAD=zero_test and session is not None, STORE_Y1=y1 is not None,
            HAS_IR=tr.ir is not None, HAS_MS=tr.ms is not None, ALPHA=tr.alpha_mode,
            HAS_OSA=tr.osa is not None, HAS_TBIAS=tr.tbias is not None,
            HAS_ACC=acc is not None, HAS_ABIAS=abias is not None, IDX64=geom.idx64,
            BLOCK_M=block_mo, BLOCK_O=block_o, num_warps=TUNE["out_warps"], **_LAUNCH_KW,
        )
        if DEBUG is not None:
            DEBUG.append(dict(
                red=red, first=first, p=pbuf.clone(), rowmult=None if rowmult is None else rowmult.clone(),
                y=y.clone(), noise=None if noise is None else noise.clone(),
                flags=None if flags is None else flags.tolist(), dst=dst[:, o0:o0 + oj].clone(),
            ))
        if grad is not None:
            grad.update(red=red, zero=zero_now, y1=y1, sc_mode=sc_mode, scale_f=scale_f, rs_mode=rs_mode,
                        mult_f=mult_f)
        if zero_now:
            STATS.zero_shortcuts += 1
            return
        if session is not None:
            return  # first iteration only; the session's flag says whether that was right
        if flags is not None and (bm_test or on_cuda):
            if not allow_sync:
                raise RuntimeError(
                    "fused_forward(allow_sync=False): this config needs a host sync (iterative "
                    "bound management, or the all-zero-input shortcut on CUDA); use speculative()"
                )
            STATS.host_syncs += 1
            fz, fb = flags.tolist()
            if zero_test and fz == 0:
                if rng is not None:
                    torch.cuda.set_rng_state(rng, device)  # stock draws nothing
                STATS.zero_shortcuts += 1
                if grad is not None:
                    grad["zero"] = True
                return
            passed = not (bm_test and fb != 0)
        else:
            passed = True
        first = False


#: Each layer's cached launch plan (weak: a deep copy of a layer, e.g. a chip, starts without one).
_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Plan:
    """A layer's cached launch plan for one input signature."""

    def __init__(self, key: tuple, fp: tuple, reason: Optional[str]):
        self.key = key
        self.fp = fp
        self.reason = reason
        self.geom: Optional[_Geom] = None
        self.tiles: List[tuple] = []  # (TileRun, in-row idx, k0, ki, o0, oj, last row)
        self.in_sizes: List[int] = []
        self.out_total = 0
        self.abias: Optional[Tensor] = None
        self.autograd = False


def _layer_fp(layer: torch.nn.Module) -> tuple:
    mod = layer.analog_module
    grid, _, _, abias = _tiles_grid(mod)
    return (
        id(mod), id(abias), type(layer), layer.training, getattr(abias, "requires_grad", None),
        len(mod._forward_hooks), len(mod._forward_pre_hooks), "forward" in mod.__dict__,
        len(_torch_module._global_forward_hooks), len(_torch_module._global_forward_pre_hooks),
        tuple(_tile_fp(t) for row in grid for t in row),
    )


def _get_plan(layer: torch.nn.Module, x: Tensor) -> _Plan:
    grad = torch.is_grad_enabled()
    key = (tuple(x.shape), x.stride(), x.dtype, x.device, grad, x.requires_grad)
    fp = _layer_fp(layer)
    plan = _PLANS.get(layer)
    if plan is not None and plan.key == key and plan.fp == fp:
        return plan
    STATS.plan_builds += 1
    plan = _Plan(key, fp, fused_supported(layer, x))
    plan.autograd = grad and (x.requires_grad or any(p.requires_grad for p in layer.parameters()))
    if plan.reason is None:
        geom, _ = _geometry(layer, x)
        plan.geom = geom
        grid, in_sizes, out_sizes, abias = _tiles_grid(layer.analog_module)
        plan.in_sizes, plan.out_total, plan.abias = in_sizes, sum(out_sizes), abias
        k0 = 0
        for idx, (ki, row) in enumerate(zip(in_sizes, grid)):
            o0 = 0
            for oj, tile in zip(out_sizes, row):
                plan.tiles.append((_TileRun(tile, x.device), idx, k0, ki, o0, oj, idx == len(in_sizes) - 1))
                o0 += oj
            k0 += ki
    _PLANS[layer] = plan
    return plan


def fused_forward(layer: torch.nn.Module, x: Tensor, *, allow_sync: bool = True) -> Tensor:
    """``layer(x)`` (AnalogConv2d / AnalogLinear), bitwise identical, through the fused kernels.

    Raises ``ValueError`` if :func:`fused_supported` gives a reason. ``allow_sync=False`` raises
    instead of synchronising with the host where exactness needs it (iterative bound
    management, or the all-zero-input shortcut of per-row noise management on CUDA); a model
    run under :func:`speculative` syncs once per model forward instead.
    """
    plan = _get_plan(layer, x)
    if plan.reason is not None:
        raise ValueError(f"fused path not applicable: {plan.reason}")
    if plan.autograd:
        return _fused_autograd(layer, plan, x)
    with torch.no_grad():
        return _run_plan(layer, plan, x, allow_sync, _SESSION)


def _run_plan(layer, plan: _Plan, x: Tensor, allow_sync: bool, session: Optional[_Session],
              grads: Optional[list] = None) -> Tensor:
    geom = plan.geom
    xk = x if geom.conv else x.reshape(-1, x.shape[-1])
    prepad = TUNE["prepad"]
    if prepad == "auto":  # measured: pays off when the gather runs twice (per-row noise management)
        prepad = any(tr.nm_mode != _NM_SCALAR and not _kblock(ki)[1] and not _use_window(tr, geom, k0, ki)
                     for tr, _, k0, ki, _, _, _ in plan.tiles)
    if geom.conv and prepad and geom.pad != (0, 0):
        # zero-pad once (1/(kh*kw) of the patch matrix's traffic): the gather needs no bounds test
        ph, pw = geom.pad
        xk = torch.nn.functional.pad(x, (pw, pw, ph, ph))
        span = sum(abs(st) * sz for st, sz in zip(xk.stride(), xk.shape))
        geom = dataclasses.replace(geom, h=xk.shape[2], w=xk.shape[3], sx=tuple(xk.stride()), pad=(0, 0),
                                   idx64=geom.idx64 or span >= _I32_LIMIT)
    device = x.device
    m = geom.m
    nrows = len(plan.in_sizes)
    bufs = [torch.empty((m, plan.out_total), dtype=torch.float32, device=device)]
    if nrows > 1:
        bufs.append(torch.empty((m, plan.out_total), dtype=torch.float32, device=device))
    cache: dict = {} if session is not None else {"flags": _FlagPool(device)}
    acc = None
    cur_row = 0
    dst = bufs[0]
    for t, (tr, idx, k0, ki, o0, oj, last) in enumerate(plan.tiles):
        if idx != cur_row:
            acc, cur_row = dst, idx
        dst = bufs[idx % 2]
        x_slice_like = None
        if not geom.conv:
            x_slice_like = x[..., k0 : k0 + ki] if nrows > 1 else x
        grad = None
        if grads is not None:
            grad = grads[t]
            _grad_tile_start(tr, grad, geom, ki, device)
        _run_tile(tr, xk, geom, k0, ki, o0, oj, acc, dst, plan.abias if last else None,
                  x_slice_like, allow_sync, cache, session, grad)
    out = dst
    if grads is not None:
        return out
    if geom.conv:
        oh = geom.l // geom.ow
        return out.view(geom.n, geom.l, plan.out_total).transpose(1, 2).view(
            geom.n, plan.out_total, oh, geom.ow)
    return out.view(geom.lead + (plan.out_total,))


# --------------------------------------------------------------------------------------------
# autograd: backward bit for bit stock's
# --------------------------------------------------------------------------------------------
#
# The layer forward under autograd is one torch.autograd.Function (_FusedFn) whose output is the
# tile array's [N, L, O] (conv) / [M, O] (linear) result; the conv's transpose + view are done
# outside it, exactly as AnalogConv2d.forward does, so the gradient handed to the backward is the
# very tensor stock's TileModuleArray / tile receives. Inside the forward every tile's GEMM is
# stock's own call (AnalogMVM._matmul) under autograd on a leaf holding the prepared input and
# on an alias of the weight (through aihwkit's own modify_weight in training mode); its backward
# is then autograd's own (same mm / bmm calls, strides, hook-free alias; the tile weight's hooks
# fire once, on the gradient this Function returns for it).
#
# The backward replays stock's autograd arithmetic in stock's order (see NOTES.md):
# output side with torch ops on output-sized tensors (layouts then follow automatically), the
# clamps' gradients by autograd on the saved clamp inputs (the installed torch's own rule), the
# patch-sized input side in Triton (_bwd_input_kernel: MVM input clamp mask -- rule probed from
# the installed AnalogMVM._prepare_input, so the project's input-range fix is honoured --,
# straight-through quantisation, scale, the max() gradient to the arg-max element times sgn,
# input range clip/divide), every reduction by the same ATen op on a tensor of stock's shape and
# strides (materialised by the kernel), and col2im in ATen's per-device order (_col2im_kernel).


def _probe_clamp(fn) -> Optional[bool]:
    """Gradient rule of a clamp to [-1, 1]: True (pass where -1 <= x <= 1), False (pass where
    -1 < x < 1), None (anything else: NaN handling, masked values, layout)."""
    xs = torch.tensor([[-2.0, -1.0, 0.5, 1.0], [2.0, float("nan"), -0.25, 0.0]]).t().contiguous().t()
    xs.requires_grad_(True)
    g = torch.tensor([[float("nan"), 2.0, 3.0, 4.0], [float("inf"), 6.0, 7.0, 8.0]])
    with torch.enable_grad():
        out = fn(xs)
    got = torch.autograd.grad(out, xs, g)[0]
    incl = torch.tensor([[0.0, 2.0, 3.0, 4.0], [0.0, 0.0, 7.0, 8.0]])
    strict = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 7.0, 8.0]])
    if got.stride() != xs.stride():  # the mask's (self's) layout, as torch.where(cond, grad, 0)
        return None
    if torch.equal(got, incl):
        return True
    if torch.equal(got, strict):
        return False
    return None


_RULES_CACHE: dict = {}


def _grad_rules() -> Tuple[Optional[dict], Optional[str]]:
    """The clamp gradient rules in force (torch version, and whether the project's input-range
    fix replaced AnalogMVM._prepare_input), probed on tiny CPU tensors; cached per method."""
    key = (id(AnalogMVM.__dict__.get("_prepare_input")), torch.__version__)
    got = _RULES_CACHE.get(key)
    if got is not None:
        return got
    from aihwkit.simulator.parameters.io import IOParameters  # pylint: disable=import-outside-toplevel

    io = IOParameters()
    io.inp_bound, io.inp_res, io.inp_noise, io.inp_asymmetry = 1.0, -1.0, 0.0, 0.0
    with torch.random.fork_rng(devices=[]):
        mvm = _probe_clamp(lambda t: AnalogMVM._prepare_input(t, 1.0, False, False, io))
        plain = _probe_clamp(lambda t: torch.clamp(t, min=-1.0, max=1.0))
    if mvm is None or plain is None:
        got = (None, "clamp gradient rule of this torch / AnalogMVM._prepare_input not recognised")
    else:
        got = ({"mvm_incl": mvm, "clamp_incl": plain}, None)
    _RULES_CACHE[key] = got
    return got


@triton.jit
def _bwd_input_kernel(
    x_ptr, gp_ptr, s_ptr, arg_ptr, gnm_ptr, ir_ptr, t_ptr, gu_ptr,
    v_ptr, u1_ptr, u2_ptr, f_ptr,
    M, L, OW, K_TILE, K0,
    H, W, sxn, sxc, sxh, sxw,
    gpn, gpl, gpk, tn, tl_, tk, gun, gul, guk,
    SH, SW, PH, PW, DH, DW,
    scale_scalar, inp_res, inp_res_inv, inp_bound,
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_IR: tl.constexpr, NM_MODE: tl.constexpr, SCALING: tl.constexpr, QUANT: tl.constexpr,
    RECIP_DIV: tl.constexpr, MVM_INCL: tl.constexpr, IR_INCL: tl.constexpr,
    PHASE: tl.constexpr, ACC: tl.constexpr, IRG: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One tile's patch-sized backward, elementwise over [rows, tile columns].

    PHASE 1: T = where(clamp_ok(P1), gP, 0) * u  (stock's ``grad * self`` of ``scaled *= scale``,
    written in stock's layout for ATen's sum_to_size). PHASE 2: the gradient at the tile input
    x_i: (where(...) * scale + [max's arg-max element] g_nm * sgn(u)) / r, masked by the input
    range clip; accumulated onto gu (out-tiles of one in-split, stock's order); with IRG also the
    patch-sized operands of the input range's gradient (div backward, InputRangeForward)."""
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < M
    kmask = kk < K_TILE
    n = rows // L
    lidx = rows % L
    ihb = (lidx // OW) * SH - PH
    iwb = (lidx % OW) * SW - PW
    k = K0 + kk
    c = k // (KH * KW)
    rem = k % (KH * KW)
    kih = (rem // KW) * DH
    kiw = (rem % KW) * DW
    if IDX64:
        n = n.to(tl.int64)
        lidx = lidx.to(tl.int64)
        kk64 = kk.to(tl.int64)
        xoff = (n * sxn + ihb.to(tl.int64) * sxh + iwb.to(tl.int64) * sxw)[:, None] + (
            c.to(tl.int64) * sxc + kih.to(tl.int64) * sxh + kiw.to(tl.int64) * sxw)[None, :]
    else:
        kk64 = kk
        xoff = (n * sxn + ihb * sxh + iwb * sxw)[:, None] + (c * sxc + kih * sxh + kiw * sxw)[None, :]
    ih = ihb[:, None] + kih[None, :]
    iw = iwb[:, None] + kiw[None, :]
    em = row_ok[:, None] & kmask[None, :]
    ok = em & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    x0 = tl.load(x_ptr + xoff, mask=ok, other=0.0)
    if HAS_IR:
        r = tl.load(ir_ptr)
        ra = tl.abs(r)
        a = _clamp(x0, -ra, ra)
        u = tl.math.div_rn(a, tl.zeros_like(a) + r)
    else:
        u = x0
    # recompute the prepared input's clamp input P1 (scale, quantise)
    if SCALING == 2:
        srow = tl.load(s_ptr + rows, mask=row_ok, other=1.0)
        p = u * srow[:, None]
    elif SCALING == 1:
        p = u * scale_scalar
    else:
        p = u
    if QUANT:
        if RECIP_DIV:
            q = p * inp_res_inv
        else:
            q = tl.math.div_rn(p, tl.zeros_like(p) + inp_res)
        p = _rint(q) * inp_res
    if MVM_INCL:
        cok = (p >= -inp_bound) & (p <= inp_bound)
    else:
        cok = (p > -inp_bound) & (p < inp_bound)
    gpo = n[:, None] * gpn + lidx[:, None] * gpl + kk64[None, :] * gpk
    gp = tl.load(gp_ptr + gpo, mask=em, other=0.0)
    gp1 = tl.where(cok, gp, 0.0)
    if PHASE == 1:
        t = gp1 * u
        to = n[:, None] * tn + lidx[:, None] * tl_ + kk64[None, :] * tk
        tl.store(t_ptr + to, t, mask=em)
    else:
        if SCALING == 2:
            g = gp1 * srow[:, None]
        elif SCALING == 1:
            g = gp1 * scale_scalar
        else:
            g = gp1
        if NM_MODE != 0:
            arow = tl.load(arg_ptr + rows, mask=row_ok, other=-1)
            gnm = tl.load(gnm_ptr + rows, mask=row_ok, other=0.0)
            e = tl.where(kk[None, :] == arow[:, None], gnm[:, None], 0.0)
            if NM_MODE == 1:  # abs backward: grad * sgn(u)
                sg = tl.where(u > 0.0, 1.0, tl.where(u < 0.0, -1.0, 0.0))
                sg = tl.where(u != u, u, sg)
                e = e * sg
            g = g + e
        if HAS_IR:
            d = tl.math.div_rn(g, tl.zeros_like(g) + r)  # DivBackward: grad / r
            if IR_INCL:
                iok = (x0 >= -ra) & (x0 <= ra)
            else:
                iok = (x0 > -ra) & (x0 < ra)
            g0 = tl.where(iok, d, 0.0)
            if IRG:
                to = n[:, None] * tn + lidx[:, None] * tl_ + kk64[None, :] * tk
                v = (-g) * tl.math.div_rn(u, tl.zeros_like(u) + r)  # -grad * ((self / r) / r)
                tl.store(v_ptr + to, v, mask=em)
                up = tl.where(a >= r, 1.0, 0.0) * d
                up = tl.where(up > 0.0, 0.0, up)  # clamp(max=0)
                tl.store(u1_ptr + to, up, mask=em)
                lo = tl.where(a <= -r, 1.0, 0.0) * d
                lo = tl.where(lo < 0.0, 0.0, lo)  # clamp(min=0)
                tl.store(u2_ptr + to, lo, mask=em)
                tl.store(f_ptr + to, tl.where(tl.abs(a) < r, 1.0, 0.0), mask=em)
        else:
            g0 = g
        guo = n[:, None] * gun + lidx[:, None] * gul + (K0 + kk64)[None, :] * guk
        if ACC:
            g0 = tl.load(gu_ptr + guo, mask=em, other=0.0) + g0
        tl.store(gu_ptr + guo, g0, mask=em)


@triton.jit
def _col2im_kernel(
    gu_ptr, gx_ptr, TOTAL, C, H, W, OH, OW, K, L,
    SH, SW, PH, PW, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr, DESCENDING: tl.constexpr, IDX64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """ATen's col2im of the [N, L, K] patch gradient into contiguous [N, C, H, W]: every pixel
    sums its kernel offsets from 0.0 in fp32, ascending (CPU) / descending (CUDA) (kh, kw)."""
    pid = tl.program_id(0)
    if IDX64:
        idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        idx = pid * BLOCK + tl.arange(0, BLOCK)
    msk = idx < TOTAL
    w = idx % W
    h = (idx // W) % H
    c = (idx // (W * H)) % C
    n = idx // (W * H * C)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in tl.static_range(KH * KW):
        if DESCENDING:
            i = (KH * KW - 1 - t) // KW
            j = (KH * KW - 1 - t) % KW
        else:
            i = t // KW
            j = t % KW
        hh = h + PH - i * DH
        ww = w + PW - j * DW
        okh = (hh >= 0) & ((hh % SH) == 0) & ((hh // SH) < OH)
        okw = (ww >= 0) & ((ww % SW) == 0) & ((ww // SW) < OW)
        ok = msk & okh & okw
        oh = tl.where(ok, hh // SH, 0)
        ow = tl.where(ok, ww // SW, 0)
        off = (n * L + oh * OW + ow) * K + c * (KH * KW) + (i * KW + j)
        v = tl.load(gu_ptr + off, mask=ok, other=0.0)
        acc = tl.where(ok, acc + v, acc)
    tl.store(gx_ptr + idx, acc, mask=msk)


def _grad_tile_start(tr: "_TileRun", grad: dict, geom: "_Geom", ki: int, device) -> None:
    """Per tile, before its forward: per-row buffers and the weight actually multiplied (stock:
    the tile weight, or in training mode aihwkit's own modify_weight of it, drawn here so the
    random stream keeps stock's order)."""
    w = tr.weight
    w_alias = w.detach().requires_grad_(w.requires_grad)
    grad["w_alias"] = w_alias
    with torch.enable_grad():
        if tr.is_test:
            grad["w_used"] = w_alias
        else:
            batch = geom.n if geom.conv else geom.m
            grad["w_used"] = TorchSimulatorTile.modify_weight(w_alias, tr.tile.tile._modifier, batch)
    m = geom.m
    if tr.nm_mode != _NM_SCALAR:
        grad["arg"] = torch.empty(m, dtype=torch.int32, device=device)
        grad["nm0"] = torch.empty(m, dtype=torch.float32, device=device)
        grad["s"] = torch.empty(m, dtype=torch.float32, device=device)


def _param_slots(plan: "_Plan") -> List[Tuple[str, int, Tensor]]:
    """Tensors the layer's gradient flows into besides the input, in an order that makes autograd
    accumulate them as stock does (the input range: post_forward, x / r, InputRangeForward)."""
    slots = []
    for t, (tr, *_rest) in enumerate(plan.tiles):
        if tr.weight.requires_grad:
            slots.append(("w", t, tr.weight))
        if tr.ir is not None and tr.ir.requires_grad:
            slots += [("r_post", t, tr.ir), ("r_div", t, tr.ir), ("r_irf", t, tr.ir)]
        if tr.osa is not None and tr.osa.requires_grad:
            slots.append(("osa", t, tr.osa))
        if tr.tbias is not None and tr.tbias.requires_grad:
            slots.append(("tb", t, tr.tbias))
    if plan.abias is not None and plan.abias.requires_grad:
        slots.append(("ab", -1, plan.abias))
    return slots


class _FusedFn(torch.autograd.Function):
    """A fused layer forward with stock's gradient (see the section comment)."""

    # pylint: disable=abstract-method, arguments-differ

    @staticmethod
    def forward(ctx, layer, plan, x, *params):  # type: ignore[override]
        grads = [dict(need_p=bool(x.requires_grad or (tr.ir is not None and tr.ir.requires_grad)))
                 for tr, *_ in plan.tiles]
        out = _run_plan(layer, plan, x, True, None, grads=grads)
        ctx.plan, ctx.grads = plan, grads
        ctx.save_for_backward(x)
        geom = plan.geom
        if all(g["zero"] for g in grads) and not params:
            # stock: every tile took the all-zero shortcut, so its output needs no gradient
            out = out.view(geom.n, geom.l, plan.out_total) if geom.conv else out
            ctx.mark_non_differentiable(out)
            return out
        return out.view(geom.n, geom.l, plan.out_total) if geom.conv else out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return (None, None) + _backward(ctx.plan, ctx.grads, x, g, ctx.needs_input_grad[2])


def _sum_to(t: Tensor, like: Tensor) -> Tensor:
    """autograd's reduction of a broadcast gradient (at::sum_to), then the view's reshape."""
    return t.sum_to_size(like.shape)


def _backward(plan: "_Plan", grads: list, x: Tensor, g: Tensor, need_x: bool) -> tuple:
    # pylint: disable=too-many-locals, too-many-branches, too-many-statements
    rules, why = _grad_rules()
    assert rules is not None, why
    geom = plan.geom
    device = g.device
    lead = (geom.n, geom.l) if geom.conv else (geom.m,)
    out_total = plan.out_total
    G = g  # [N, L, O] / [M, O]: what stock's array (or tile) output receives
    pg: dict = {}
    if plan.abias is not None and plan.abias.requires_grad:
        pg[("ab", -1)] = _sum_to(G, plan.abias.view((1,) * len(lead) + (-1,))).reshape(plan.abias.shape)
    k_total = sum(plan.in_sizes)
    gu = None
    if need_x or any(gr["need_p"] for gr in grads):
        gu = torch.empty(lead + (k_total,), dtype=torch.float32, device=device)
    on_cuda = device.type == "cuda"
    # rows in order; inside a row the out-tiles in reverse (autograd runs the later-created first)
    rows: dict = {}
    for t, (tr, idx, k0, ki, o0, oj, last) in enumerate(plan.tiles):
        rows.setdefault(idx, []).append(t)
    for idx in sorted(rows):
        wrote = False
        for t in reversed(rows[idx]):
            tr, _, k0, ki, o0, oj, _ = plan.tiles[t]
            gr = grads[t]
            tile = tr.tile
            io = tr.io
            tv = (1,) * len(lead) + (-1,)
            Gt = G.narrow(-1, o0, oj) if (len(plan.tiles) > 1 or oj != out_total) else G
            if tr.tbias is not None and tr.tbias.requires_grad:
                pg[("tb", t)] = _sum_to(Gt, tr.tbias.view(tv)).reshape(tr.tbias.shape)
            zero = gr["zero"]
            # recompute the output-side intermediates (same ops as stock, exact)
            if zero:
                yc2 = torch.zeros(lead + (oj,), dtype=torch.float32, device=device)
                yc = m_row = None
            else:
                y1 = gr["y1"].view(lead + (oj,))
                bound = io.out_bound if io.out_bound > 0 else float("inf")
                yc = torch.clamp(y1, min=-bound, max=bound)
                m_row = None
                if gr["rs_mode"] == _SC_ROW:
                    s_row = gr["s"].view(lead + (1,))
                    m1 = s_row.reciprocal()
                    m_row = m1 * io.out_scale
                    yc2 = yc * m_row
                elif gr["rs_mode"] == _SC_SCALAR:
                    yc2 = yc * gr["mult_f"]
                else:
                    yc2 = yc
            post_scale = None
            if tr.ir is not None:
                post_scale = tr.ir
                if tr.ms is not None:
                    post_scale = post_scale * tr.ms.view(tv)
            elif tr.ms is not None:
                post_scale = tr.ms.view(tv)
            z = yc2 * post_scale if post_scale is not None else yc2
            gcur = Gt
            if tr.osa is not None:
                osa_v = tr.osa.view(tv)
                if tr.osa.requires_grad:
                    z2 = z * tile.alpha if tr.alpha_mode != _AL_NONE else z
                    pg[("osa", t)] = _sum_to(gcur * z2, osa_v).reshape(tr.osa.shape)
                gcur = gcur * osa_v
            if tr.alpha_mode != _AL_NONE:
                gcur = gcur * tile.alpha
            if post_scale is not None:
                if tr.ir is not None and tr.ir.requires_grad:
                    if tr.ms is not None:
                        ms_v = tr.ms.view(tv)
                        g_scale = _sum_to(gcur * yc2, post_scale)
                        pg[("r_post", t)] = _sum_to(g_scale * ms_v, tr.ir)
                    else:
                        pg[("r_post", t)] = _sum_to(gcur * yc2, tr.ir)
                gcur = gcur * post_scale
            if zero:
                continue
            g_m = None
            if m_row is not None:
                g_m = _sum_to(gcur * yc, m_row)
                gcur = gcur * m_row
            elif gr["rs_mode"] == _SC_SCALAR:
                gcur = gcur * gr["mult_f"]
            with torch.enable_grad():
                y1l = y1.detach().requires_grad_(True)
                ycl = torch.clamp(y1l, min=-bound, max=bound)
            g_y = torch.autograd.grad(ycl, y1l, gcur)[0]
            ins = []
            if gr["need_p"]:
                ins.append(gr["p_leaf"])
            if tr.weight.requires_grad:
                ins.append(gr["w_alias"])
            got = torch.autograd.grad(gr["y"], ins, g_y.view(gr["y"].shape)) if ins else ()
            if tr.weight.requires_grad:
                pg[("w", t)] = got[-1]
            gr["y"] = gr["p_leaf"] = None  # free the inner graph
            if not gr["need_p"]:
                continue
            g_p = got[0]
            _tile_input_backward(tr, gr, geom, x, k0, ki, g_p, g_m, gu, wrote, rules, on_cuda, pg, t,
                                 lead, plan)
            wrote = True
        if not wrote and gu is not None:
            gu[..., sum(plan.in_sizes[:idx]) : sum(plan.in_sizes[: idx + 1])].zero_()
    g_x = None
    if need_x:
        if geom.conv:
            g_x = _col2im(gu, geom, x, on_cuda)
        else:
            g_x = gu.view(x.shape)
    outs = [g_x]
    for kind, t, _ in _param_slots(plan):
        outs.append(pg.get((kind, t)))
    return tuple(outs)


def _tile_input_backward(tr, gr, geom, x, k0, ki, g_p, g_m, gu, acc, rules, on_cuda, pg, t, lead, plan):
    """Patch-sized part of one tile's backward (two phases when the tile scales per row)."""
    # pylint: disable=too-many-arguments, too-many-locals
    io = tr.io
    m = geom.m
    device = g_p.device
    x_slice_like = None
    if not geom.conv:
        x_slice_like = x[..., k0 : k0 + ki] if len(plan.in_sizes) > 1 else x
    xk = x if geom.conv else x.reshape(-1, x.shape[-1])
    gp3 = g_p.view(lead + (ki,)) if g_p.dim() != len(lead) + 1 else g_p
    if geom.conv:
        gps = gp3.stride()
    else:
        gps = (gp3.stride(0), 0, gp3.stride(1))
    gus = gu.stride() if geom.conv else (gu.stride(0), 0, gu.stride(1))
    nm = tr.nm_mode != _NM_SCALAR
    sc_mode = gr["sc_mode"]
    scale_f = gr["scale_f"]
    dummy = gu
    block_m, block_k = 64, _pow2_block(ki, 16, 64)
    grid = (triton.cdiv(m, block_m), triton.cdiv(ki, block_k))
    inp_bound = tr.inp_bound if tr.inp_clamp else float("inf")
    irg = tr.ir is not None and tr.ir.requires_grad

    def launch(phase, s_ptr, gnm, tbuf, tst, extra):
        _bwd_input_kernel[grid](
            xk, gp3, s_ptr, dummy if gnm is None else gr["arg"], dummy if gnm is None else gnm,
            dummy if tr.ir is None else tr.ir, dummy if tbuf is None else tbuf, gu, *extra,
            m, geom.l, geom.ow, ki, k0,
            geom.h, geom.w, *geom.sx,
            *gps, *tst, *gus,
            *geom.st, *geom.pad, *geom.dil,
            scale_f, tr.inp_res, tr.inp_res_inv, inp_bound,
            KH=geom.kh, KW=geom.kw, HAS_IR=tr.ir is not None, NM_MODE=tr.nm_mode if phase == 2 else 0,
            SCALING=sc_mode, QUANT=tr.inp_quant, RECIP_DIV=on_cuda, MVM_INCL=rules["mvm_incl"],
            IR_INCL=rules["clamp_incl"], PHASE=phase, ACC=acc, IRG=irg and phase == 2, IDX64=geom.idx64,
            BLOCK_M=block_m, BLOCK_K=block_k, num_warps=4, **_LAUNCH_KW,
        )

    s_row = gr["s"] if nm else dummy
    g_nm0 = None
    if nm:
        # T = where(ok, gP, 0) * u in stock's layout, reduced by ATen exactly as stock's MulBackward
        tbuf, tst = _prepared_buffer(geom, ki, False, x_slice_like, device)
        launch(1, s_row, None, tbuf, tst, (dummy,) * 4)
        s3 = s_row.view(lead + (1,))
        g_sb = _sum_to(tbuf, s3)
        m1 = s3.reciprocal()
        g_sa = (-(g_m * io.out_scale)) * (m1 * m1)  # (out_scale / scale): reciprocal, * out_scale
        g_s = g_sa + g_sb
        if tr.b_management:
            g_s = g_s / gr["red"]  # scale /= reduction
        g_s1 = g_s * 1.0  # 1.0 / nm == nm.reciprocal() * 1.0
        nm0 = gr["nm0"].view(lead + (1,))
        with torch.enable_grad():
            nm0l = nm0.detach().requires_grad_(True)
            nm_pre = torch.clamp(nm0l, max=io.nm_thres) if io.nm_thres > 0.0 else nm0l
        nm_v = nm_pre.detach().masked_fill(nm_pre.detach() <= 0.0, 1.0)
        r1 = nm_v.reciprocal()
        g_nm = (-g_s1) * (r1 * r1)
        g_nm = g_nm.masked_fill(nm_pre.detach() <= 0.0, 0.0)  # nm[nm <= 0] = 1 (index_put backward)
        if io.nm_thres > 0.0:
            g_nm = torch.autograd.grad(nm_pre, nm0l, g_nm)[0]
        g_nm0 = g_nm.reshape(m).contiguous()
    extra = (dummy,) * 4
    tst = (0, 0, 0)
    irbufs = None
    if tr.ir is not None and tr.ir.requires_grad:
        irbufs = [_prepared_buffer(geom, ki, False, x_slice_like, device) for _ in range(4)]
        extra = tuple(b for b, _ in irbufs)
        tst = irbufs[0][1]
    launch(2, s_row, g_nm0, None, tst, extra)
    if irbufs is not None:
        r = tr.ir
        v, u1, u2, f = (b for b, _ in irbufs)
        pg[("r_div", t)] = _sum_to(v, r)
        irp = tr.tile.rpu_config.pre_post.input_range
        ir_grad = torch.zeros_like(r)
        ir_grad += u1.sum()
        ir_grad -= u2.sum()
        if irp.gradient_relative:
            ir_grad *= r
            ir_grad *= irp.gradient_scale
        if irp.decay > 0:
            percentage = f.mean()
            ir_grad += irp.decay * r * (percentage > irp.input_min_percentage)
        pg[("r_irf", t)] = ir_grad


def _col2im(gu: Tensor, geom: "_Geom", x: Tensor, on_cuda: bool) -> Tensor:
    n, c, h, w = x.shape
    gx = torch.empty((n, c, h, w), dtype=torch.float32, device=x.device)
    total = gx.numel()
    block = 256
    oh = geom.l // geom.ow
    idx64 = total >= _I32_LIMIT or gu.numel() >= _I32_LIMIT
    _col2im_kernel[(triton.cdiv(total, block),)](
        gu, gx, total, c, h, w, oh, geom.ow, gu.shape[-1], geom.l,
        *geom.st, *geom.pad, *geom.dil,
        KH=geom.kh, KW=geom.kw, DESCENDING=on_cuda, IDX64=idx64, BLOCK=block, num_warps=4, **_LAUNCH_KW,
    )
    return gx


def _fused_autograd(layer, plan: "_Plan", x: Tensor) -> Tensor:
    params = [p for _, _, p in _param_slots(plan)]
    out = _FusedFn.apply(layer, plan, x, *params)
    geom = plan.geom
    if geom.conv:
        oh = geom.l // geom.ow
        return out.transpose(-1, -2).view(geom.n, plan.out_total, oh, geom.ow)  # AnalogConv2d's own ops
    return out.view(geom.lead + (plan.out_total,))


# --------------------------------------------------------------------------------------------
# model-level switch (per-instance forward, as aihwkit_nabn.acceleration does)
# --------------------------------------------------------------------------------------------


def _dispatch_forward(layer: torch.nn.Module, x: Tensor) -> Tensor:
    plan = _get_plan(layer, x)
    if plan.reason is None:
        if plan.autograd:
            return _fused_autograd(layer, plan, x)
        with torch.no_grad():
            return _run_plan(layer, plan, x, True, _SESSION)
    return type(layer).forward(layer, x)


class _Bound:
    """Per-instance forward of an installed layer (deepcopy / pickle follow the layer)."""

    def __init__(self, layer: torch.nn.Module):
        self.layer = layer

    def __call__(self, x: Tensor) -> Tensor:
        return _dispatch_forward(self.layer, x)


def install(model: torch.nn.Module) -> dict:
    """Route every AnalogConv2d / AnalogLinear of ``model`` through the fused forward whenever
    :func:`fused_supported` allows it (checked per call, cached per input signature), else
    through aihwkit's own forward. Returns ``{name: None or reason}`` as of now (no input)."""
    report = {}
    for name, mod in model.named_modules():
        if type(mod) in (AnalogConv2d, AnalogLinear):  # pylint: disable=unidiomatic-typecheck
            mod.__dict__["forward"] = _Bound(mod)
            report[name] = fused_supported(mod)
    return report


def uninstall(model: torch.nn.Module) -> None:
    """Undo :func:`install` (and :func:`speculative`)."""
    for mod in model.modules():
        if isinstance(mod.__dict__.get("forward"), (_Bound, _Speculative)):
            del mod.__dict__["forward"]
        _PLANS.pop(mod, None)


class _Speculative:
    """Model forward that runs every fused tile's first iteration without host syncs and checks
    once at the end; if any tile needed more (a bound-management repeat, the all-zero shortcut),
    the random state is restored and the whole forward is redone in exact per-tile mode."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _SESSION  # pylint: disable=global-statement
        model = self.model
        fwd = type(model).forward
        if _SESSION is not None or torch.is_grad_enabled() or any(m.training for m in model.modules()):
            return fwd(model, *args, **kwargs)
        cpu_state = torch.get_rng_state()
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        session = _Session()
        _SESSION = session
        try:
            out = fwd(model, *args, **kwargs)
        finally:
            _SESSION = None
        STATS.spec_forwards += 1
        if session.bad is not None:
            STATS.host_syncs += 1
            if int(session.bad.item()) != 0:
                STATS.spec_reruns += 1
                torch.set_rng_state(cpu_state)
                if cuda_states is not None:
                    torch.cuda.set_rng_state_all(cuda_states)
                out = fwd(model, *args, **kwargs)
        return out


def speculative(model: torch.nn.Module) -> torch.nn.Module:
    """:func:`install` the fused layers and make ``model(x)`` speculative (eval + no_grad only):
    one host sync per forward when no tile needs a second bound-management iteration, the exact
    per-tile path (redo from the saved random state) when one does. Same numbers either way."""
    install(model)
    model.__dict__["forward"] = _Speculative(model)
    return model


def forward_if_supported(layer: torch.nn.Module, x: Tensor) -> Optional[Tensor]:
    """``layer(x)`` through the fused kernels when they apply (checked once per input signature), else None.

    Under autograd the fused forward runs as an autograd function whose backward is stock's arithmetic.
    The accelerated layers call this first on CUDA; ``None`` sends them to the exact torch path.
    """
    plan = _get_plan(layer, x)
    if plan.reason is not None:
        return None
    if plan.autograd:
        return _fused_autograd(layer, plan, x)
    with torch.no_grad():
        return _run_plan(layer, plan, x, True, _SESSION)


def speculate(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model(x)`` speculative (as :func:`speculative`) without rerouting its layers: they keep their
    own forward, which calls :func:`forward_if_supported`. Eval + no_grad only; one host sync per forward."""
    model.__dict__["forward"] = _Speculative(model)
    return model


def is_speculative(model: torch.nn.Module) -> bool:
    """Whether :func:`speculate` (or :func:`speculative`) is installed on ``model``."""
    return isinstance(model.__dict__.get("forward"), _Speculative)


def unspeculate(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`speculate`."""
    if is_speculative(model):
        del model.__dict__["forward"]
    return model
