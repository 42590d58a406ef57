"""Does the package at another commit compute the same Penn-Fudan rows? A reduced `reproduce pennfudan` on the CPU.

The committed Penn-Fudan comparison ran the package at one commit; later commits refactored code it uses. This
runs all three parts on the trained detector and its HWA model (rebuilt at shorter side 256 so that it runs on a
CPU), 6 test images, 8 calibration / labeled training images, 2 chips, 1 s and 1 y, 3 BN fine-tuning steps, and
writes the rows without their timing columns. Run it once per package state, then compare:

    git worktree add /tmp/old d7a19af
    PYTHONPATH=/tmp/old python examples/reproduce/code_state_check.py run \
        results/pennfudan/code_state_check/d7a19af.json
    python examples/reproduce/code_state_check.py run results/pennfudan/code_state_check/head.json
    python examples/reproduce/code_state_check.py compare results/pennfudan/code_state_check/{d7a19af,head}.json
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(out: Path, data: str) -> None:
    """Run the reduced comparison with whichever `aihwkit_nabn` is importable; write its rows and provenance."""
    import torch

    import aihwkit_nabn as nb
    from aihwkit_nabn.evaluation.comparison import load_config, run_comparison

    torch.set_num_threads(1)  # two states can run side by side on a small CPU
    package = Path(nb.__file__).resolve().parent
    commit = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True,
                           text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp())
    results = ROOT / "results" / "pennfudan"
    for src, dst in ((results / "checkpoints" / "fcos_small.pt", "d.pt"),
                     (results / "hwa" / "fcos_small_hwa.pt", "h.pt")):
        checkpoint = torch.load(src, map_location="cpu", weights_only=False)
        checkpoint["meta"]["model_kwargs"].update(min_size=256, max_size=400)  # CPU-sized inputs
        torch.save(checkpoint, tmp / dst)
    task = nb.get_task("pennfudan", data)
    config = load_config(task.default_config, {
        "data.test_samples": 6, "data.calib_samples": 8, "data.labeled_samples": 8, "data.batch_size": 2,
        "hardware.input_range_samples": 4, "device": "cpu", "sweep.times": ["1s", "1y"], "sweep.chips": 2,
        "bnft.steps": 3, "bnft.batch_size": 2,
        "models": {"d": {"digital": str(tmp / "d.pt"), "hwa": str(tmp / "h.pt")}},
        "retention.models": ["d"], "retention.calibrate_at": ["1s"], "calib_size.models": ["d"],
        "calib_size.sizes": [4, 8]})
    run_comparison(task, config, tmp / "out", progress=False, command="code_state_check")
    parts = {}
    for part in ("main", "retention", "calib_size"):
        rows = json.loads((tmp / "out" / part / "rows.json").read_text())
        # timing and memory differ run to run; every other column is the computation
        parts[part] = [{k: v for k, v in r.items() if "second" not in k and "mib" not in k.lower()} for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"package": str(package), "commit": commit, "uncommitted_changes": bool(dirty),
                               "torch": torch.__version__, "rows": parts}, indent=1, sort_keys=True))
    print(f"{out}: {sum(len(v) for v in parts.values())} rows from the package at {commit[:12]}")


def compare(a: Path, b: Path) -> int:
    """Print whether two runs' rows are identical (and the largest difference if not); 0 if identical."""
    ra, rb = (json.loads(p.read_text()) for p in (a, b))
    lines = [f"{p}: package at {r['commit'][:12]}, uncommitted changes: {r['uncommitted_changes']}"
             for p, r in ((a, ra), (b, rb))]
    same = ra["rows"] == rb["rows"]
    n = sum(len(v) for v in ra["rows"].values())
    values = [r["value"] for v in ra["rows"].values() for r in v]
    if same:
        lines.append(f"identical: all {n} rows (values {min(values):.2f} to {max(values):.2f})")
    else:
        worst = max((abs(x["value"] - y["value"])
                     for p in ra["rows"] for x, y in zip(ra["rows"][p], rb["rows"].get(p, []))), default=float("nan"))
        lines.append(f"DIFFERENT: largest value difference {worst:.4f} (row counts "
                     f"{n} vs {sum(len(v) for v in rb['rows'].values())})")
    print("\n".join(lines))
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("out", type=Path)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pennfudan.tar.gz"))
    p = sub.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.out, args.data)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
