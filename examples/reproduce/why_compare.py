"""Compare one setting of two ``noise_why.py`` measurements (two why.json files): e.g. the same setting measured on
the GPU with the table's deployment and on the CPU with ``--ir-batch``, to show how far the second stands in for
the first.

Usage:
    python examples/reproduce/why_compare.py A/why.json B/why.json --setting pcm [--out compare.json]
Prints, per statistic (isolated SNR and mean shift per analog layer, in-network rho^2 per BN layer after ``gdc``
and after ``nabn``; each the mean over chips), the median over layers in A and in B, the largest per-layer
difference, and the values at the last BN layer and at the outputs; ``--out`` also writes them as JSON.
"""

import argparse
import json
import statistics
from pathlib import Path

#: (part of a chip's entry, statistic) compared
STATISTICS = (("isolated", "snr_db"), ("isolated", "mean_shift_sd"), ("gdc", "rho2"), ("nabn", "rho2"))


def layer_means(chips: list, part: str, key: str) -> dict:
    """Per layer of ``part``, the mean over chips of ``key``."""
    return {layer: statistics.fmean(c[part][layer][key] for c in chips) for layer in chips[0][part]}


def compare(a: dict, b: dict, setting: str) -> dict:
    """The comparison of ``setting`` in two why.json contents (see the module's docstring); returns a dict."""
    ca, cb = a["settings"][setting]["chips"], b["settings"][setting]["chips"]
    out = {"setting": setting, "chips": [len(ca), len(cb)],
           "devices": [a["settings"][setting].get("device"), b["settings"][setting].get("device")],
           "input_range_batch": [a.get("input_range_batch"), b.get("input_range_batch")], "statistics": {}}
    for part, key in STATISTICS:
        ma, mb = layer_means(ca, part, key), layer_means(cb, part, key)
        if ma.keys() != mb.keys():
            raise SystemExit(f"why_compare: {setting}'s {part} layers differ between the two files")
        entry = {"median": [statistics.median(ma.values()), statistics.median(mb.values())],
                 "max_abs_diff": max(abs(mb[k] - ma[k]) for k in ma)}
        if part != "isolated":
            last_bn = [k for k in ma if k != "output"][-1]
            entry.update(last_bn=last_bn, at_last_bn=[ma[last_bn], mb[last_bn]], at_output=[ma["output"], mb["output"]])
        out["statistics"][f"{part}.{key}"] = entry
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--setting", required=True)
    p.add_argument("--out", default="")
    args = p.parse_args()
    files = [json.loads(Path(f).read_text()) for f in (args.a, args.b)]
    missing = [f for f, d in zip((args.a, args.b), files) if args.setting not in d["settings"]]
    if missing:
        raise SystemExit(f"why_compare: no setting {args.setting!r} in {', '.join(missing)}")
    result = {"a": args.a, "b": args.b, **compare(*files, args.setting)}
    for name, entry in result["statistics"].items():
        line = (f"{name}: median over layers {entry['median'][0]:.3f} (A) vs {entry['median'][1]:.3f} (B), "
                f"largest layer difference {entry['max_abs_diff']:.3f}")
        if "last_bn" in entry:
            line += (f"; last BN ({entry['last_bn']}) {entry['at_last_bn'][0]:.3f} vs {entry['at_last_bn'][1]:.3f}, "
                     f"outputs {entry['at_output'][0]:.3f} vs {entry['at_output'][1]:.3f}")
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
