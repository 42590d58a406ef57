"""Rewrite the report files of finished comparison parts from their journals, with the current code.

Usage: python examples/reproduce/rewrite_reports.py RESULTS_DIR [RESULTS_DIR ...]

For every part folder (main, retention, calib_size) under each RESULTS_DIR that holds a ``rows.csv`` journal,
the summaries, the plots and the paired per-chip differences (``paired.*``, ``loss_vs_digital.png``) are
written again by :func:`aihwkit_nabn.write_report`; the journal itself (the measurements) is not changed,
so a report added after a GPU run (such as the paired confidence intervals) comes from the rows it ran.
"""

import json
import sys
from pathlib import Path

from aihwkit_nabn import write_report
from aihwkit_nabn.evaluation.comparison import PARTS
from aihwkit_nabn.evaluation.journal import read_rows


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    for folder in map(Path, argv):
        run = folder / "run.json"
        title = json.loads(run.read_text()).get("config", {}).get("title") if run.exists() else None
        parts = [p for p in PARTS if (folder / p / "rows.csv").exists()]
        if not parts:
            raise SystemExit(f"{folder}: no <part>/rows.csv journal (parts: {', '.join(PARTS)})")
        for part in parts:
            rows = read_rows(folder / part / "rows.csv")
            write_report(rows, folder / part, title=f"{title} — {part}" if title else part)
            print(f"{folder / part}: {len(rows)} rows, reports rewritten")


if __name__ == "__main__":
    main(sys.argv[1:])
