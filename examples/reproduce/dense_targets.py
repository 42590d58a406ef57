"""The CamVid / Penn-Fudan issue targets at the last drift time, from a comparison's main rows.

Usage: python examples/reproduce/dense_targets.py results/pennfudan --metric ap50 [--out results/pennfudan/targets.json]

Prints and writes, at the latest time of ``<folder>/main/rows.csv`` (or an unfinished journal's folder): each
method's mean and std over chips, the recovered fraction ``(nabn - gdc) / (digital - gdc)`` of the chip means
(the issues' target: >= 0.7) and of each chip with its 95 % t interval (chips where gdc loses nothing left
out), and the paired ``hwa+nabn - hwa`` difference with its interval (target: at least as good, i.e. the
interval not below zero).
"""

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from aihwkit_nabn.evaluation.noise_table import recovered_fraction
from aihwkit_nabn.evaluation.paired import paired_differences, t_half_width


def _interval(values):
    mean = statistics.fmean(values)
    half = t_half_width(statistics.stdev(values), len(values)) if len(values) > 1 else None
    return (mean, None, None) if half is None else (mean, mean - half, mean + half)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    path = args.folder / "main" / "rows.csv"
    if not path.exists():
        sys.exit(f"{path} is missing")
    rows = [r for r in csv.DictReader(open(path)) if r["metric"] == args.metric]
    if not rows:
        sys.exit(f"{path} has no rows of metric {args.metric!r}")
    last = max(float(r["time_s"]) for r in rows)
    at = [r for r in rows if float(r["time_s"]) == last]
    value = defaultdict(dict)  # method -> chip seed -> value
    for r in at:
        value[r["method"]][r["chip_seed"]] = float(r["value"])
    summary = {m: {"mean": statistics.fmean(v.values()), "std": statistics.stdev(v.values()) if len(v) > 1 else 0.0,
                   "chips": len(v)} for m, v in value.items()}
    digital = summary["digital"]["mean"]
    recovered = recovered_fraction(digital, summary["gdc"]["mean"], summary["nabn"]["mean"])
    per_chip = [recovered_fraction(value["digital"][c], value["gdc"][c], value["nabn"][c])
                for c in value["nabn"] if c in value["gdc"] and c in value["digital"]]
    per_chip = [r for r in per_chip if r is not None]  # a chip on which gdc loses nothing has nothing to recover
    mean, low, high = _interval(per_chip)
    pair = [p for p in paired_differences([{**r, "time_s": float(r["time_s"]), "value": float(r["value"])} for r in at],
                                          pairs=[("hwa+nabn", "hwa")])]
    record = {"folder": str(args.folder), "metric": args.metric, "time_s": last, "methods": summary,
              "nabn_recovered_of_chip_means": recovered,
              "nabn_recovered_per_chip": {"mean": mean, "ci95": [low, high], "chips": len(per_chip)},
              "hwa+nabn_minus_hwa": {k: pair[0][k] for k in ("mean", "ci_low", "ci_high", "n_chips", "resolved")}
              if pair else None}
    for m, s in summary.items():
        print(f"{m:10s} {s['mean']:6.2f} ± {s['std']:.2f} ({s['chips']} chips)")
    print(f"nabn recovers {100 * recovered:.1f} % of the gdc loss (chip means; target 70 %); per chip "
          f"{100 * mean:.1f} % [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")
    if pair:
        p = pair[0]
        print(f"hwa+nabn - hwa: {p['mean']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] over {p['n_chips']} chips")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
