"""Issue 13's targets, from the fair CIFAR-10 grid and the checkpoints it deployed.

Usage: python examples/reproduce/fair_targets.py results/cifar10_fair/grid/reproduce \\
           --digital results/cifar10_fair/checkpoints --hwa results/cifar10_fair/hwa [--model resnet32] [--out DIR]

At the grid's latest drift time (1 y), from ``<grid>/main/rows.csv``, the paired per-chip differences with their
95 % t intervals (:func:`~aihwkit_nabn.evaluation.paired.paired_differences`):

* ``hwa - digital`` >= -3, ``hwa+nabn - digital`` >= -1, ``nabn - digital`` >= -2 (points of top-1), and
  ``bnft - nabn`` >= 0;
* each target is ``met`` when the mean over chips reaches it and ``met_with_confidence`` when the whole interval
  does (the README reports both);

and, per model, the unprogrammed HWA model's test top-1 (read once, at the end of its training, in its checkpoint's
meta) against the digital model's: within 0.5 points. Writes ``targets.json`` and ``targets.md`` into ``--out``
(default: the grid folder).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from aihwkit_nabn.evaluation.paired import paired_differences
from aihwkit_nabn.training.checkpoints import read_checkpoint

#: (a, b, bound): the target ``a - b >= bound`` at the latest time, on the chosen model.
TARGETS = (("hwa", "digital", -3.0), ("hwa+nabn", "digital", -1.0), ("nabn", "digital", -2.0), ("bnft", "nabn", 0.0))
UNPROGRAMMED_WITHIN = 0.5


def _accuracy(path: Path) -> float:
    """The test top-1 in a checkpoint's meta; a one-line exit if it is missing."""
    if not path.is_file():
        sys.exit(f"{path} is missing")
    meta = read_checkpoint(path).get("meta") or {}
    if "accuracy" not in meta:
        sys.exit(f"{path} has no test accuracy in its meta")
    return float(meta["accuracy"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--digital", type=Path, required=True, help="folder of <model>.pt")
    parser.add_argument("--hwa", type=Path, required=True, help="folder of <model>_hwa.pt")
    parser.add_argument("--model", default="resnet32", help="the model the paired targets are set for")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    path = args.grid / "main" / "rows.csv"
    if not path.is_file():
        sys.exit(f"{path} is missing")
    rows = [{**r, "time_s": float(r["time_s"]), "value": float(r["value"])} for r in csv.DictReader(open(path))]
    models = sorted({r["model"] for r in rows})
    if args.model not in models:
        sys.exit(f"{path} has no rows of model {args.model!r} (it has {models})")
    last = max(r["time_s"] for r in rows)
    at = [r for r in rows if r["model"] == args.model and r["time_s"] == last]
    pairs = {(p["a"], p["b"]): p for p in paired_differences(at, pairs=[(a, b) for a, b, _ in TARGETS])}
    targets = []
    for a, b, bound in TARGETS:
        p = pairs.get((a, b))
        if p is None:
            sys.exit(f"{path}: no paired rows of {a} and {b} for {args.model} at {last} s")
        targets.append({"target": f"{a} - {b} >= {bound:+g}", "mean": p["mean"], "ci95": [p["ci_low"], p["ci_high"]],
                        "n_chips": p["n_chips"], "met": p["mean"] >= bound,
                        "met_with_confidence": None if p["ci_low"] is None else p["ci_low"] >= bound})
    unprogrammed = []
    for m in models:
        digital, hwa = _accuracy(args.digital / f"{m}.pt"), _accuracy(args.hwa / f"{m}_hwa.pt")
        unprogrammed.append({"model": m, "digital_test": digital, "hwa_unprogrammed_test": hwa,
                             "difference": hwa - digital, "met": hwa - digital >= -UNPROGRAMMED_WITHIN})
    record = {"grid": str(args.grid), "model": args.model, "time_s": last, "targets": targets,
              "unprogrammed_hwa_within": UNPROGRAMMED_WITHIN, "unprogrammed": unprogrammed}
    lines = [f"Targets at {last:g} s on {args.model} (paired per chip, 95 % t interval):", "",
             "| target | mean | 95 % CI | chips | met (mean) | met (whole interval) |", "| --- | --- | --- | --- | --- | --- |"]
    for t in targets:
        ci = "n/a (one chip)" if t["ci95"][0] is None else f"[{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]"
        sure = {True: "yes", False: "no", None: "n/a"}[t["met_with_confidence"]]
        lines.append(f"| {t['target']} | {t['mean']:+.2f} | {ci} | {t['n_chips']} | {'yes' if t['met'] else 'no'} | {sure} |")
    lines += ["", f"Unprogrammed HWA against digital (test top-1, within {UNPROGRAMMED_WITHIN} points):", "",
              "| model | digital | HWA, unprogrammed | difference | met |", "| --- | --- | --- | --- | --- |"]
    for u in unprogrammed:
        lines.append(f"| {u['model']} | {u['digital_test']:.2f} | {u['hwa_unprogrammed_test']:.2f} "
                     f"| {u['difference']:+.2f} | {'yes' if u['met'] else 'no'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or args.grid
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "targets.md").write_text(text)


if __name__ == "__main__":
    main()
