"""Diagnostics: where does fused differ from stock? (tile by tile, stage by stage)

python debug_fused.py [--model]   (GPU or CPU-interpreter)
"""

from __future__ import annotations

import argparse
import copy
import json
from numbers import Number

import torch
import torch.nn.functional as F

from aihwkit.nn import AnalogConv2d
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
from aihwkit.simulator.tiles.utils import UniformQuantize

from aihwkit_nabn._aihwkit import fused as fa  # noqa: E402
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the configs of the equivalence tests
from test_fused import DEVICE, _probe_kernel, conv, pcm_config, rand


def bits_diff(a, b):
    if a is None or b is None:
        return "n/a" if a is None and b is None else "one missing"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    ne = a.reshape(-1).view(torch.int32) != b.reshape(-1).view(torch.int32)
    if not bool(ne.any()):
        return "equal"
    idx = int(ne.nonzero()[0])
    return (f"{int(ne.sum())}/{ne.numel()} differ; first flat {idx}: "
            f"{a.reshape(-1)[idx].item()!r} vs {b.reshape(-1)[idx].item()!r}")


def stock_trace(tile, x_input):
    """aihwkit's TorchInferenceTile forward for one tile, recording intermediates (same ops)."""
    tile.tile.set_config(tile.rpu_config)
    is_test = not tile.training
    x = tile.pre_forward(x_input, x_input.dim() - 1, is_test, None)
    weight = tile.tile.weight
    io = tile.tile._f_io
    recs = []
    nm = AnalogMVM._compute_noise_management(input_=x, nm_type=io.noise_management, io_pars=io)
    n_m = io.noise_management != NoiseManagementType.NONE
    b_m = io.bound_management != BoundManagementType.NONE
    if isinstance(nm, torch.Tensor) and (nm == 0.0).all():
        return recs, "zero"
    if isinstance(nm, torch.Tensor):
        nm[nm <= 0.0] = 1.0
    red = 0.5
    passed = False
    inp_res = io.inp_res
    if inp_res > 0:
        inp_res = 1 / inp_res if inp_res > 1.0 else inp_res
        inp_res *= 2.0 * io.inp_bound
    while not passed:
        red *= 2.0
        scale = 1.0
        scaling = False
        if n_m:
            scale /= nm
            scaling = not (isinstance(scale, Number) and scale == 1.0)
        if b_m:
            scale /= red
            scaling = not (isinstance(scale, Number) and scale == 1.0)
        prepared = AnalogMVM._prepare_input(x, scale, scaling, io.inp_asymmetry != 0.0, io)
        y = AnalogMVM._matmul(weight, prepared, trans=False)
        y0 = y.clone()
        noise = torch.randn_like(y) if io.out_noise > 0 else None
        if noise is not None:
            y += io.out_noise * noise
        yq = y
        if io.out_res > 0:
            yq = UniformQuantize.apply(y, io.out_res, io.out_bound, io.out_sto_round)
        bound = io.out_bound if io.out_bound > 0 else float("inf")
        passed_t = ((yq <= bound) & (yq >= -bound)).all()
        recs.append(dict(red=red, p=prepared.reshape(-1, prepared.shape[-1]).contiguous(),
                         y=y0.reshape(-1, y0.shape[-1]), noise=None if noise is None else noise.reshape(-1, y0.shape[-1]),
                         passed=bool(passed_t) if b_m else True,
                         rowmult=(io.out_scale / scale).reshape(-1) if isinstance(scale, torch.Tensor) else None))
        passed = (bool(passed_t) if b_m else True) or (red > io.max_bm_factor) or (
            inp_res > 0 and red > io.max_bm_res / inp_res)
        if not b_m:
            break
    return recs, "ok"


def tile_inputs(layer, x):
    mod = layer.analog_module
    grid, in_sizes, out_sizes, _ = fa._tiles_grid(mod)
    if isinstance(layer, AnalogConv2d):
        xu = F.unfold(x, kernel_size=layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                      stride=layer.stride).transpose(-1, -2)
    else:
        xu = x
    splits = torch.split(xu, in_sizes, dim=-1)
    k0 = 0
    for i, (ki, row) in enumerate(zip(in_sizes, grid)):
        o0 = 0
        for j, (oj, tile) in enumerate(zip(out_sizes, row)):
            yield (i, j, k0, ki, o0, oj, tile, splits[i])
            o0 += oj
        k0 += ki


def compare_layer(layer, x, label=""):
    out = []
    geom, xk = fa._geometry(layer, x)
    for i, j, k0, ki, o0, oj, tile, xs in tile_inputs(layer, x):
        state = torch.get_rng_state()
        cstate = torch.cuda.get_rng_state() if x.is_cuda else None
        with torch.no_grad():
            ref_tile = tile(xs)
            rng_after_ref = torch.randn(2, device=x.device)
            torch.set_rng_state(state)
            if cstate is not None:
                torch.cuda.set_rng_state(cstate)
            recs, status = stock_trace(tile, xs)
            torch.set_rng_state(state)
            if cstate is not None:
                torch.cuda.set_rng_state(cstate)
            fa.DEBUG = []
            dst = torch.empty((geom.m, oj), device=x.device)
            tr = fa._TileRun(tile, x.device)
            xsl = None if geom.conv else xs
            fa._run_tile(tr, xk, geom, k0, ki, 0, oj, None, dst, None, xsl, True,
                         {"flags": fa._FlagPool(x.device)}, None)
            rng_after = torch.randn(2, device=x.device)
            dbg, fa.DEBUG = fa.DEBUG, None
        res = dict(tile=(i, j), status=status, n_stock_iter=len(recs), n_fused_iter=len(dbg),
                   final=bits_diff(ref_tile.reshape(-1, oj), dst), rng=bool(torch.equal(rng_after_ref, rng_after)))
        stages = []
        for it, (r, d) in enumerate(zip(recs, dbg)):
            stages.append(dict(it=it, red=(r["red"], d["red"]), p=bits_diff(r["p"], d["p"].reshape(-1, ki)),
                               rowmult=bits_diff(r["rowmult"], d["rowmult"]),
                               y=bits_diff(r["y"], d["y"]), noise=bits_diff(r["noise"], d["noise"]),
                               passed=(r["passed"], d["flags"])))
        res["stages"] = stages
        # drill down into the first mismatching stage of the first iteration
        if recs and dbg:
            r, d = recs[0], dbg[0]
            pf = d["p"].reshape(-1, ki)
            ne = (r["p"].view(torch.int32) != pf.view(torch.int32))
            if bool(ne.any()):
                row, col = [int(v) for v in ne.nonzero()[0]]
                xin = xs.reshape(-1, xs.shape[-1])
                xrow = xin[row]
                res["p_detail"] = dict(
                    row=row, col=col, x=float(xrow[col]), x_hex=xrow[col:col+1].view(torch.int32).item(),
                    stock_p=float(r["p"][row, col]), fused_p=float(pf[row, col]),
                    row_absmax=float(xrow.abs().max()), stock_rowmult=None if r["rowmult"] is None else float(r["rowmult"][row]),
                    fused_rowmult=None if d["rowmult"] is None else float(d["rowmult"][row]),
                    n_rows_bad=int(ne.any(1).sum()), n_bad=int(ne.sum()))
            if r["rowmult"] is not None and d["rowmult"] is not None:
                ne = r["rowmult"].view(torch.int32) != d["rowmult"].view(torch.int32)
                if bool(ne.any()):
                    row = int(ne.nonzero()[0])
                    xrow = xs.reshape(-1, xs.shape[-1])[row]
                    res["rowmult_detail"] = dict(row=row, stock=float(r["rowmult"][row]), fused=float(d["rowmult"][row]),
                                                 absmax=float(xrow.abs().max()), n=int(ne.sum()))
        out.append(res)
        if res["final"] != "equal" or not res["rng"]:
            print(label, json.dumps(res, indent=None, default=str), flush=True)
    return out


def probes():
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(100000, generator=g) * 4).float().to(DEVICE) + 1e-3
    ones = torch.ones_like(y)
    r = torch.empty_like(y)
    d = torch.empty_like(y)
    kw = {} if fa._INTERPRET else {"enable_fp_fusion": False}
    _probe_kernel[(1,)](ones, y, r, d, 4096, BLOCK=4096, **kw)
    print("reciprocal vs div_rn(1,x):", bits_diff(torch.reciprocal(y[:4096]), d[:4096]))
    print("1.0 / t  vs reciprocal:", bits_diff(1.0 / y, torch.reciprocal(y)))


def triton_cdiv(a, b):
    return (a + b - 1) // b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    probes()
    print("== unit bm case")
    layer = conv(4, 8, 3, pcm_config(max_in=16, out_bound=1.5), padding=1, bias=True)
    torch.manual_seed(0)
    res = compare_layer(layer, rand(2, 4, 6, 6, scale=10.0), "unit-bm")
    print("unit-bm all equal:", all(r["final"] == "equal" and r["rng"] for r in res), flush=True)
    if args.model:
        from aihwkit.nn.conversion import convert_to_analog  # pylint: disable=import-outside-toplevel
        from bench_fused import ResNetCIFAR  # pylint: disable=import-outside-toplevel

        torch.manual_seed(0)
        digital = ResNetCIFAR(5).to(DEVICE)
        with torch.no_grad():
            digital.train()
            for _ in range(2):
                digital(torch.randn(128, 3, 32, 32, device=DEVICE))
        digital.eval()
        analog = convert_to_analog(copy.deepcopy(digital), pcm_config()).to(DEVICE).eval()
        analog.program_analog_weights()
        analog.drift_analog_weights(3600.0 * 24 * 365)
        inputs = {}
        hooks = []
        for name, mod in analog.named_modules():
            if type(mod) in (AnalogConv2d,) or type(mod).__name__ == "AnalogLinear":
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, a, name=name: inputs.__setitem__(name, a[0].detach().clone())))
        x = torch.randn(args.batch, 3, 32, 32, device=DEVICE)
        with torch.no_grad():
            analog(x)
        for h in hooks:
            h.remove()
        bad = 0
        for name, mod in analog.named_modules():
            if name in inputs:
                res = compare_layer(mod, inputs[name], name)
                nb = sum(r["final"] != "equal" or not r["rng"] for r in res)
                bad += nb
                print(name, "tiles", len(res), "bad", nb, "iters", [r["n_stock_iter"] for r in res], flush=True)
        print("model bad tiles:", bad)


if __name__ == "__main__":
    main()
