"""Merge `aihwkit-nabn reproduce cifar10` outputs run in parallel (one folder per model) into one.

Usage: python examples/reproduce/merge_comparison.py OUT_DIR RUN_DIR [RUN_DIR ...]

Each RUN_DIR is the ``--out`` of one `reproduce` call (e.g. ``--models resnet20 --out runs/reproduce/resnet20``).
For every part (main, retention, calib_size) the journals RUN_DIR/<part>/rows.csv are concatenated into
OUT_DIR/<part>/ (rows.csv as journaled, plus the report files of ``write_report``, and the first folder's
``sweep_config.json``); the per-model cost tables are concatenated into OUT_DIR/costs.{json,md} and the
accuracy-against-cost plot is redrawn; OUT_DIR/run.json lists each folder's run.json (commands, wall time,
device). The per-model folders are not changed.
"""

import json
import shutil
import sys
from pathlib import Path

from aihwkit_nabn import parse_time, write_report
from aihwkit_nabn.evaluation.comparison import PARTS
from aihwkit_nabn.evaluation.costs import plot_accuracy_vs_cost, write_costs
from aihwkit_nabn.evaluation.journal import read_rows

# cost tables written before the comparison became task-agnostic named the metric columns after top-1
_OLD_COST_KEYS = {"top1_last_time": "value_last_time", "top1_std": "value_std"}


def _cost_entry(entry):
    entry = {_OLD_COST_KEYS.get(k, k): v for k, v in entry.items()}
    entry.setdefault("metric", "top1")
    return entry


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, sources = Path(argv[0]), [Path(a) for a in argv[1:]]
    runs = []
    for src in sources:
        run_file = src / "run.json"
        if not run_file.exists():
            raise SystemExit(f"{run_file} is missing: {src} did not finish")
        runs.append({"folder": str(src), **json.loads(run_file.read_text())})
    out.mkdir(parents=True, exist_ok=True)
    main_rows = []
    for part in PARTS:
        have = [src for src in sources if (src / part / "rows.csv").exists()]
        if not have:
            continue
        dest = out / part
        dest.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, src in enumerate(have):
            text = (src / part / "rows.csv").read_text().splitlines()
            lines += text if i == 0 else text[1:]  # one header
        (dest / "rows.csv").write_text("\n".join(lines) + "\n")
        shutil.copyfile(have[0] / part / "sweep_config.json", dest / "sweep_config.json")
        rows = read_rows(dest / "rows.csv")
        title = runs[0]["config"].get("title", "CIFAR-10")
        write_report(rows, dest, title=f"{title} — {part}")
        if part == "main":
            main_rows = rows
        print(f"{part}: {len(rows)} rows from {[str(s) for s in have]}")
    costs = [_cost_entry(c) for src in sources if (src / "costs.json").exists()
             for c in json.loads((src / "costs.json").read_text())]
    write_costs(costs, out)
    if main_rows:
        t_last = parse_time(runs[0]["config"]["sweep"]["times"][-1])
        plot_accuracy_vs_cost(main_rows, costs, out / "accuracy_vs_cost.png", t_last)
    (out / "run.json").write_text(json.dumps({"merged_from": runs}, indent=1, default=str) + "\n")
    print((out / "costs.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
