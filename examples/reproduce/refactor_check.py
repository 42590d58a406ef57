"""Check that a code change leaves the numbers alone: demo, reduced sweep and reduced reproduce, row by row.

    python examples/reproduce/refactor_check.py run OUT          # run the three commands into OUT/
    python examples/reproduce/refactor_check.py compare A B      # compare two such folders, write a report

``run`` calls the ``aihwkit-nabn`` console script (so it works before and after a move of the code) with
the CPU and small inputs: the offline demo as shipped, a reduced ``sweep`` (ResNet-20, 2 chips, 2 drift
times, 200 test and 128 calibration images) and a reduced ``reproduce cifar10`` (ResNet-20 and its HWA
checkpoint, 1 chip, 2 times, every method, retention and calibration size, 2 BN fine-tuning steps).
It also trains ResNet-20 for one short epoch digitally and hardware-aware (HWA) on 256 / 128 images of the
shipped CIFAR-10 sample and saves the final weights (``train/*.pt``), so the training loops are checked too.
``compare`` checks every row of every ``rows.csv`` for bitwise-equal values and equal settings, ignoring
only the measured columns (seconds, peak memory); it exits 1 on any difference.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

#: Columns that measure the run (time, memory), not its results.
MEASURED = {"method_seconds", "eval_seconds", "peak_mem_mib"}

REDUCED = [
    "--set", "data.test_samples=200", "--set", "data.calib_samples=128", "--set", "data.labeled_samples=64",
    "--set", "data.batch_size=100", "--set", "sweep.chips=1", "--set", 'sweep.times=["1s","1y"]',
    "--set", "bnft.steps=2", "--set", "bnft.batch_size=32", "--set", "hardware.input_range_samples=128",
    "--set", 'calib_size.sizes=[32,128]', "--set", "calib_size.chips=1", "--set", "retention.chips=1",
    "--set", 'retention.calibrate_at=["1s"]', "--set", 'retention.models=["resnet20"]',
    "--set", 'calib_size.models=["resnet20"]',
]


def _cli() -> list:
    exe = Path(sys.executable).with_name("aihwkit-nabn")
    return [str(exe)] if exe.exists() else ["aihwkit-nabn"]


def run(out: Path) -> None:
    """Run the three reduced commands into ``out`` and record their wall times."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    commands = {
        "demo": ["demo", "--out", str(out / "demo"), "--quiet"],
        "sweep": ["sweep", "--models", "resnet20", "--chips", "2", "--times", "1s,1y", "--test-samples", "200",
                  "--calib-samples", "128", "--batch-size", "100", "--device", "cpu", "--out", str(out / "sweep"),
                  "--quiet"],
        "reproduce": ["reproduce", "cifar10", "--models", "resnet20", "--device", "cpu", "--out", str(out / "reproduce"),
                      "--quiet", *REDUCED],
    }
    timings = {}
    (out / "train").mkdir(exist_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", TRAIN_CHECK, str(out / "train")], check=True, env=env)
    timings["train"] = round(time.perf_counter() - start, 1)
    print(f"train: {timings['train']} s", flush=True)
    for name, args in commands.items():
        start = time.perf_counter()
        subprocess.run(_cli() + args, check=True, env=env, stdout=subprocess.DEVNULL)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]} s", flush=True)
    (out / "commands.json").write_text(json.dumps({"commands": commands, "seconds": timings}, indent=1) + "\n")


TRAIN_CHECK = r"""
import sys, torch
try:  # the code before the move into task folders, then after it
    from aihwkit_nabn.data.cifar10 import load_demo_sample
    from aihwkit_nabn.hwa_training import train_hwa
    from aihwkit_nabn.models import create_model
    from aihwkit_nabn.training import train_classifier
except ImportError:
    from aihwkit_nabn.tasks.cifar10 import create_model, load_demo_sample, train_classifier, train_hwa

out = sys.argv[1]
sample = load_demo_sample()
x, y = sample["calib_images"], sample["calib_labels"]
tx, ty = sample["test_images"][:100], sample["test_labels"][:100]
torch.manual_seed(0)
model = create_model("resnet20")
digital = train_classifier(model, x[:256], y[:256], tx, ty, epochs=1, batch_size=64, seed=0, device="cpu",
                           progress=False)
torch.save({"state": model.state_dict(), "history": digital["history"]}, out + "/digital.pt")
hwa = train_hwa(model, x[:128], y[:128], tx, ty, epochs=1, batch_size=64, seed=0, device="cpu", progress=False)
state = {k: v for k, v in hwa["model"].state_dict().items() if isinstance(v, torch.Tensor)}
torch.save({"state": state, "history": hwa["history"], "ranges": hwa["input_ranges"]}, out + "/hwa.pt")
"""


class _RenamedModules(pickle.Unpickler):
    """Unpickles files written before the package was split into folders (their rpu_configs name old modules)."""

    MOVED = {"aihwkit_nabn.hwa_preset": "aihwkit_nabn.analog.hwa_preset",
             "aihwkit_nabn.presets": "aihwkit_nabn.analog.presets"}

    def find_class(self, module, name):
        return super().find_class(self.MOVED.get(module, module), name)


class _PickleModule:
    Unpickler = _RenamedModules
    load = pickle.load


def _compare_training(a: Path, b: Path) -> "tuple[list, int]":
    """Return (report lines, number of differences) between the saved training results of two runs."""
    import torch  # pylint: disable=import-outside-toplevel

    lines, bad = [], 0
    for name in ("digital.pt", "hwa.pt"):
        sa = torch.load(a / "train" / name, weights_only=False, pickle_module=_PickleModule)
        sb = torch.load(b / "train" / name, weights_only=False, pickle_module=_PickleModule)
        tensors = {k: v for k, v in sa["state"].items() if isinstance(v, torch.Tensor)}
        diffs = [k for k, v in tensors.items()
                 if not isinstance(sb["state"].get(k), torch.Tensor) or not torch.equal(v, sb["state"][k])]

        def plain(history):
            return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]

        history_equal = plain(sa["history"]) == plain(sb["history"])
        ranges_equal = sa.get("ranges") == sb.get("ranges")
        bad += len(diffs) + (not history_equal) + (not ranges_equal)
        lines.append(f"train/{name}: {len(tensors)} tensors, {len(diffs)} differ; history "
                     f"{'equal' if history_equal else 'DIFFERS'}; input ranges {'equal' if ranges_equal else 'DIFFER'}")
        lines.extend(f"    {k}" for k in diffs[:20])
    return lines, bad


def _rows(path: Path) -> dict:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {(r["model"], r["method"], r["time_s"], r["chip"]): r for r in rows}


def compare(a: Path, b: Path) -> int:
    """Compare every rows.csv under ``a`` with its twin under ``b``; print a report, return the exit code."""
    lines, bad = [], 0
    journals = sorted(p.relative_to(a) for p in a.rglob("rows.csv"))
    if not journals:
        print(f"no rows.csv under {a}")
        return 1
    for rel in journals:
        ra, rb = _rows(a / rel), _rows(b / rel) if (b / rel).exists() else {}
        diffs = []
        for key in sorted(set(ra) | set(rb)):
            if key not in ra or key not in rb:
                diffs.append(f"{key}: only in {'A' if key in ra else 'B'}")
                continue
            for col in ra[key]:
                if col not in MEASURED and ra[key][col] != rb[key].get(col):
                    diffs.append(f"{key} {col}: {ra[key][col]!r} vs {rb[key].get(col)!r}")
        bad += len(diffs)
        lines.append(f"{rel}: {len(ra)} rows, " + ("identical (all columns but "
                     + ", ".join(sorted(MEASURED)) + ")" if not diffs else f"{len(diffs)} differences"))
        lines.extend("    " + d for d in diffs[:20])
    training, n_bad = _compare_training(a, b)
    lines.extend(training)
    bad += n_bad
    print("\n".join(lines))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
