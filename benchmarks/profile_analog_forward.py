#!/usr/bin/env python
"""Where the accelerated analog forward spends its memory traffic: an operator-level profile.

Runs one accelerated analog ResNet forward (PCM preset, programmed and drifted, eval, no_grad) under
``torch.profiler`` with shapes recorded, and for every ATen operator counts the calls and the bytes it
must move at least (its inputs read once, its output written once), next to the digital model's.
The byte counts do not depend on the device, so this CPU run explains GPU timings too: at H100
bandwidth (about 3 TB/s measured on the lent machine) the minimum time of the traffic is bytes / 3e12.

Usage: python benchmarks/profile_analog_forward.py [--model resnet32] [--batch-size 64] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import aihwkit_nabn as nb
from aihwkit_nabn.training.registry import create_model

#: Operators that only make views (no data moves); they are counted as calls but not as traffic.
_VIEWS = {"aten::view", "aten::view_as", "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::transpose",
          "aten::permute", "aten::expand", "aten::slice", "aten::select", "aten::t", "aten::unsqueeze", "aten::squeeze",
          "aten::split", "aten::narrow", "aten::detach", "aten::alias", "aten::flatten", "aten::split_with_sizes",
          "aten::chunk", "aten::unbind", "aten::empty", "aten::empty_like", "aten::empty_strided"}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def op_traffic(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Return ``{op: {"calls", "bytes_in"}}`` for one no-grad forward (inputs' sizes, fp32 assumed)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(x)
    stats = defaultdict(lambda: {"calls": 0, "bytes_in": 0})
    for evt in prof.events():
        if not evt.name.startswith("aten::") or evt.cpu_parent is not None and evt.cpu_parent.name.startswith("aten::"):
            continue  # count top-level ATen calls only (children are the same work)
        stats[evt.name]["calls"] += 1
        if evt.name in _VIEWS:
            continue
        stats[evt.name]["bytes_in"] += 4 * sum(_numel(s) for s in evt.input_shapes if isinstance(s, (list, tuple)) and s
                                               and all(isinstance(d, int) for d in s))
    return dict(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    torch.manual_seed(0)
    digital = create_model(args.model).eval()
    chip = nb.Chip(nb.to_analog(digital), seed=0)
    chip.drift_to(86400.0)
    x = torch.randn(args.batch_size, 3, 32, 32)
    result = {"model": args.model, "batch_size": args.batch_size, "preset": "PCMInferencePreset, drifted 1 day"}
    for name, model in (("digital", digital), ("accelerated analog", chip.model)):
        ops = op_traffic(model, x)
        result[name] = {
            "calls": sum(o["calls"] for o in ops.values()),
            "input_bytes_per_image": sum(o["bytes_in"] for o in ops.values()) / args.batch_size,
            "top_ops": sorted(({"op": k, **v, "bytes_in_per_image": v["bytes_in"] / args.batch_size} for k, v in ops.items()),
                              key=lambda o: -o["bytes_in"])[:12],
        }
    d, a = result["digital"], result["accelerated analog"]
    result["traffic_ratio"] = a["input_bytes_per_image"] / d["input_bytes_per_image"]
    lines = [
        f"# Operator profile: {args.model}, one no-grad forward, batch {args.batch_size}",
        "",
        f"`python benchmarks/profile_analog_forward.py --model {args.model} --batch-size {args.batch_size}`",
        "",
        "| model | ATen calls (views included) | bytes read per image (inputs of data-moving ops, fp32; writes not counted) |",
        "| --- | --- | --- |",
        f"| digital | {d['calls']} | {d['input_bytes_per_image'] / 2**20:.2f} MiB |",
        f"| accelerated analog | {a['calls']} | {a['input_bytes_per_image'] / 2**20:.2f} MiB |",
        "",
        f"The analog forward reads {result['traffic_ratio']:.1f}x the bytes of the digital one. At batch 512 and"
        " about 3 TB/s (H100) the analog reads alone take at least "
        f"{a['input_bytes_per_image'] * 512 / 3e12 * 1e3:.1f} ms per batch.",
        "",
        f"On the GPU each data-moving call is at least one kernel launch; {a['calls']} calls per forward "
        f"against {d['calls']} for the digital model.",
        "",
        "Largest analog operators by bytes read:",
        "",
        "| op | calls | MiB read per image |",
        "| --- | --- | --- |",
    ] + [f"| {o['op']} | {o['calls']} | {o['bytes_in_per_image'] / 2**20:.2f} |" for o in a["top_ops"]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile_{args.model}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"profile_{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
