#!/usr/bin/env python
"""Time of a full drift sweep, from its journals: deployment (calibration) and evaluation seconds per model.

The sweep itself is `aihwkit-nabn sweep` (see examples/reproduce/README.md); every row it journals holds
the seconds its method and its evaluation took, so the sweep's cost is read back from `rows.csv`.

Usage: python benchmarks/sweep_timing.py [--sweeps results/core] [--out results/benchmarks/sweep_timing.md]
"""

import argparse
from pathlib import Path

from aihwkit_nabn.evaluation.journal import read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", default="results/core", help="folder with one sweep folder per model")
    parser.add_argument("--out", default="results/benchmarks/sweep_timing.md")
    args = parser.parse_args()
    lines = [
        "# Core drift sweep timing (GPU, H100, accelerated tiles, PCM preset, evaluation batch 2000)", "",
        f"Sum over the rows of each model (5 chips x 5 times x 4 methods), from `{args.sweeps}/<model>/rows.csv`.",
        "These sweeps ran while other jobs (baseline and HWA training) shared the GPU, so they are upper bounds.", "",
        "| model | evaluations | deploy s (calibration) | evaluation s | total s | mean s per analog evaluation (10,000 images) |",
        "|---|---|---|---|---|---|",
    ]
    total = 0.0
    for folder in sorted(p for p in Path(args.sweeps).iterdir() if (p / "rows.csv").is_file()):
        rows = read_rows(folder / "rows.csv")
        deploy = sum(r["method_seconds"] for r in rows)
        evaluate = sum(r["eval_seconds"] for r in rows)
        analog = [r["eval_seconds"] for r in rows if r["method"] != "digital"]
        total += deploy + evaluate
        lines.append(f"| {folder.name} | {len(rows)} | {deploy:.1f} | {evaluate:.1f} | {deploy + evaluate:.1f} | "
                     f"{sum(analog) / len(analog):.2f} |")
    lines += ["", f"All models: {total:.0f} s of deployment + evaluation (chip programming and drift not included)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
