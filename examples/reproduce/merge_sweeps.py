"""Merge the journals of several sweeps (one folder per model) into one report.

Usage: python examples/reproduce/merge_sweeps.py OUT_DIR SWEEP_DIR [SWEEP_DIR ...]
Reads each SWEEP_DIR/rows.csv and writes OUT_DIR/{rows.json,summary.*,sweep.png} with
aihwkit_nabn.write_report; the per-model folders stay as they are.
"""

import sys
from pathlib import Path

from aihwkit_nabn import write_report
from aihwkit_nabn.evaluation.journal import read_rows


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, sources = Path(argv[0]), [Path(a) for a in argv[1:]]
    rows = [row for src in sources for row in read_rows(src / "rows.csv")]
    if not rows:
        raise SystemExit(f"no rows in {[str(s) for s in sources]}")
    paths = write_report(rows, out, title="CIFAR-10 (JPEG q75 copy): PCM drift, core methods")
    print(paths["summary.md"].read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
