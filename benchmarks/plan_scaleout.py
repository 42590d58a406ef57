"""Expected wall time of the project's grids on 1, 8 and 64 GPUs, from measured per-row times (issue 15).

Usage: python benchmarks/plan_scaleout.py [--out results/scaleout]

Reads the committed journals measured alone on one H200 (``results/benchmarks/grid_h200/<model>/`` for CIFAR-10
ResNet-20/32 with the fused path, ``results/camvid/`` for CamVid) and the speed records
(``results/benchmarks/speed_cuda.json``), and writes ``plan.json`` / ``plan.md``. The model, stated in the output:

* a grid is a set of work units (one model x chip index: every source, time and method of it, the unit of
  ``--ray``); a unit's time is the sum of its rows' ``method_seconds + eval_seconds`` times the overhead the
  H200 grids show between their rows and their part's wall time (chip programming and drift, Python);
* on G GPUs the units are spread evenly, one at a time per GPU (GPU-bound: sharing a GPU between units is
  assumed to give no speed-up), so the wall time is the setup (models, input ranges, data: measured as
  wall - parts) plus ceil(U / G) units; more GPUs than units do not help (more chips do);
* what stays serial: HWA training of a model (one GPU: torchrun DDP exists, but its speed-up is not measured yet) and the data decode;
* ResNet-56 rows are ResNet-32's scaled by their measured inference-time ratio; ImageNet ResNet-50 rows are
  ResNet-32's scaled by the FLOPs per image (4.1 G / 0.069 G), the evaluation also by the test-set size
  (50,000 / 5,000 images), i.e. assuming the same device efficiency — an extrapolation, not a measurement;
* Penn-Fudan (two metrics per row pair: the times of its ``ap50`` rows are counted once): a chip's main grid is
  the measured mean row time of each method times the 5 times (from the rows measured so far, which include
  the first fine-tuning of each process: 65-77 s of Triton compilation for the analog backward, paid once per
  worker process), plus its retention and calibration-size rows, times the overhead of its own retention and
  calibration-size parts (part wall / their rows); its HWA fine-tuning (15 epochs) and CamVid's are serial;
* the noise tables of CamVid and Penn-Fudan (20 settings x 6 methods at 1 y x 5 chips) take their per-method
  row times from those grids.
"""

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from aihwkit_nabn.utils.provenance import code_commit

ROOT = Path(__file__).resolve().parents[1]
GPUS = (1, 8, 64)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _seconds(row):
    """A row's device seconds: deployment (method) + evaluation."""
    return float(row["method_seconds"]) + float(row["eval_seconds"])


def _per_method(rows):
    """Mean seconds of one row per method (method + eval)."""
    acc = defaultdict(list)
    for r in rows:
        acc[r["method"]].append(_seconds(r))
    return {m: sum(v) / len(v) for m, v in acc.items()}


def _last_seconds(log):
    """The ``seconds`` of the last record of a training log (the whole run's training time)."""
    return float(json.loads(Path(log).read_text().splitlines()[-1])["seconds"])


def _pennfudan():
    """Penn-Fudan's measured unit: the final comparison if committed, else the journals of the unfinished one."""
    final = ROOT / "results/pennfudan"
    base = final if (final / "main" / "rows.csv").exists() else final / "in_progress" / "parts"
    find = (lambda part: base / part / "rows.csv") if base == final else (
        lambda part: next(base.glob(f"*/{part}/rows.csv")))
    parts = {p: [r for r in _rows(find(p)) if r["metric"] == "ap50"] for p in ("main", "retention", "calib_size")}
    pm = _per_method(parts["main"])
    times = len(json.loads((find("main").parent / "sweep_config.json").read_text())["times"])
    chips = len({r["chip"] for r in parts["retention"]})
    side = [r for p in ("retention", "calib_size") for r in parts[p]]
    side_sum = sum(_seconds(r) for r in side)
    files = [final / "run.json"] if base == final else list(base.glob("*/run.json"))
    files += sorted((final / "compare_logs").glob("*run.json"))
    # a comparison run as parallel parts records each part's process in "merged_from"
    runs = [part for f in files for run in [json.loads(f.read_text())] for part in run.get("merged_from", [run])]
    walls = [sum(s for p, s in run["part_seconds"].items() if p in ("retention", "calib_size")) for run in runs]
    # only a process that ran the side parts whole: one that resumed them from their journals re-read the rows
    # and its wall is shorter than the rows' own seconds (the final run.json records the last, resumed process)
    whole = max((w for w in walls if w >= side_sum), default=None)
    if whole is None:
        raise SystemExit(f"{final}: no run.json of a process that ran the retention and calib_size parts whole")
    task_overhead = whole / side_sum
    unit = (sum(pm.values()) * times + side_sum / chips) * task_overhead
    return {"unit_seconds": unit, "per_method": pm, "overhead": task_overhead,
            "rows": sum(len(v) for v in parts.values()),
            "source": "final comparison" if base == final else "unfinished comparison's journals",
            "hwa_seconds": _last_seconds(final / "hwa" / "fcos_small_hwa.pt.log.jsonl")}


def _noise_grid(name, unit_seconds, chips, setup, note, settings=20):
    """A noise table: the settings one after another, each setting's chips as parallel units."""
    out = {"grid": name, "units": settings * chips, "unit_seconds": unit_seconds, "setup_seconds": setup * settings,
           "note": note}
    for g in GPUS:
        out[f"wall_seconds_{g}gpu"] = settings * (setup + math.ceil(chips / g) * unit_seconds)
    return out


def _grid(name, unit_seconds, units, setup, hwa_serial=0.0, note=""):
    out = {"grid": name, "units": units, "unit_seconds": unit_seconds, "setup_seconds": setup,
           "hwa_training_seconds_serial": hwa_serial, "note": note}
    for g in GPUS:
        out[f"wall_seconds_{g}gpu"] = setup + hwa_serial + math.ceil(units / g) * unit_seconds
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scaleout")
    args = parser.parse_args(argv)
    grids_dir = ROOT / "results" / "benchmarks" / "grid_h200"
    measured = {}
    overheads, setups = [], []
    for model in ("resnet20", "resnet32"):
        rows = _rows(grids_dir / model / "main" / "rows.csv")
        run = json.loads((grids_dir / model / "run.json").read_text())
        row_sum = sum(_seconds(r) for r in rows)
        overheads.append(run["part_seconds"]["main"] / row_sum)
        setups.append(run["wall_seconds"] - sum(run["part_seconds"].values()))
        measured[model] = {"rows": len(rows), "row_seconds": row_sum, "per_method": _per_method(rows),
                           "chips": len({r["chip"] for r in rows}), "wall": run["wall_seconds"]}
    overhead = sum(overheads) / len(overheads)
    setup = max(setups)
    records = json.loads((ROOT / "results/benchmarks/speed_cuda.json").read_text())["records"]
    speed = {(r["model"], r["preset"], r["mode"]): r for r in records if r.get("accelerated_ms") is not None}
    r56 = speed[("resnet56", "pcm", "inference")]["accelerated_ms"] / speed[("resnet32", "pcm", "inference")]["accelerated_ms"]
    hwa_epoch = {m: speed[(m, "hwa", "hwa_step")]["accelerated_ms"] / 1000 * (45000 // 512)
                 for m in ("resnet20", "resnet32", "resnet56")}  # one epoch of 45k images at batch 512

    unit = {m: measured[m]["row_seconds"] / measured[m]["chips"] * overhead for m in ("resnet20", "resnet32")}
    unit["resnet56"] = unit["resnet32"] * r56
    grids = []
    for chips in (5, 100):
        u = chips * 3
        per_unit = (unit["resnet20"] + unit["resnet32"] + unit["resnet56"]) / 3
        grids.append(_grid(f"CIFAR-10 main grid, 3 models x 8 methods x 5 times x {chips} chips", per_unit, u, setup,
                           note="ResNet-20/32 measured, ResNet-56 scaled"))
    hwa = {"grid": "CIFAR-10 HWA, 100 epochs per model (ResNet-20/32/56)", "units": 3,
           "unit_seconds": max(hwa_epoch.values()) * 100, "setup_seconds": 0.0,
           "note": "one GPU per model (DDP speed-up unmeasured): serial on 1 GPU, side by side from 3 GPUs on"}
    for g in GPUS:
        hwa[f"wall_seconds_{g}gpu"] = (sum(hwa_epoch.values()) if g == 1 else max(hwa_epoch.values())) * 100
    grids.append(hwa)
    # noise table: ResNet-32, 20 settings x 6 methods x 3 times x 5 chips (Wan2022: its 3 times)
    pm = measured["resnet32"]["per_method"]
    noise_unit = sum(pm[m] for m in ("digital", "gdc", "nabn", "bnft", "hwa", "hwa+nabn")) * 3 * overhead
    for chips in (5, 100):
        grids.append(_noise_grid(f"noise table, ResNet-32 x 20 settings x 6 methods x 3 times x {chips} chips",
                                 noise_unit, chips, setup, "settings one after another, each setting's chips in parallel"))
    camvid_hwa = _last_seconds(ROOT / "results/camvid/hwa/unet_small_hwa.pt.log.jsonl")
    camvid_rows = sum(len(_rows(ROOT / f"results/camvid/{p}/rows.csv")) for p in ("main", "retention", "calib_size"))
    camvid_sum = sum(_seconds(r) for p in ("main", "retention", "calib_size")
                     for r in _rows(ROOT / f"results/camvid/{p}/rows.csv"))
    grids.append(_grid("CamVid, unet_small, main + retention + calibration size, 5 chips", camvid_sum / 5 * overhead,
                       5, setup, hwa_serial=camvid_hwa, note=f"{camvid_rows} measured rows, HWA {camvid_hwa:.0f} s serial"))
    camvid_pm = _per_method(_rows(ROOT / "results/camvid/main/rows.csv"))
    pf = _pennfudan()
    grids.append(_grid("Penn-Fudan, fcos_small, main + retention + calibration size, 5 chips", pf["unit_seconds"], 5,
                       setup, hwa_serial=pf["hwa_seconds"],
                       note=f"{pf['rows']} measured rows ({pf['source']}), HWA {pf['hwa_seconds']:.0f} s serial"))
    for name, pm_task, task_overhead in (("CamVid unet_small", camvid_pm, overhead),
                                         ("Penn-Fudan fcos_small", pf["per_method"], pf["overhead"])):
        unit_s = sum(pm_task[m] for m in ("digital", "gdc", "nabn", "bnft", "hwa", "hwa+nabn")) * task_overhead
        grids.append(_noise_grid(f"noise table, {name} x 20 settings x 6 methods at 1 y x 5 chips", unit_s, 5, setup,
                                 "per-method row times of its main grid; settings one after another"))
    r32 = _rows(grids_dir / "resnet32" / "main" / "rows.csv")
    flops = 4.1 / 0.069
    # evaluation scales with FLOPs x test images; calibration and fine-tuning (same image counts) with FLOPs only
    imagenet_unit = (sum(float(r["eval_seconds"]) for r in r32) * flops * (50000 / 5000)
                     + sum(float(r["method_seconds"]) for r in r32) * flops) / measured["resnet32"]["chips"] * overhead
    grids.append(_grid("ImageNet ResNet-50 (extrapolated), 8 methods x 5 times x 100 chips", imagenet_unit,
                       100, setup * 10, note=f"ResNet-32 rows x {flops:.0f} (FLOPs), evaluation also x 10 (test images)"))
    record = {"commit": code_commit(), "overhead_factor": overhead, "setup_seconds": setup, "resnet56_over_resnet32": r56,
              "hwa_epoch_seconds_45k_batch512": hwa_epoch, "measured": measured, "grids": grids,
              "model": __doc__.split("The model, stated in the output:")[1].strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plan.json").write_text(json.dumps(record, indent=1) + "\n")

    def fmt(s):
        return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"
    lines = ["| grid | units | one unit | " + " | ".join(f"{g} GPU{'s' if g > 1 else ''}" for g in GPUS) + " | note |",
             "|" + " --- |" * (len(GPUS) + 4)]
    for g in grids:
        lines.append(f"| {g['grid']} | {g['units']} | {g['unit_seconds']:.0f} s | "
                     + " | ".join(fmt(g[f'wall_seconds_{n}gpu']) for n in GPUS) + f" | {g['note']} |")
    lines += ["", f"Measured alone on one H200: overhead factor {overhead:.3f} (part wall / sum of row seconds), setup "
              f"{setup:.0f} s per comparison, ResNet-56 / ResNet-32 inference {r56:.2f}x; HWA epoch (45k images, "
              "batch 512): " + ", ".join(f"{m} {s:.1f} s" for m, s in hwa_epoch.items()) + ". Units run one per "
              "GPU at a time (no speed-up assumed from sharing a GPU)."]
    (args.out / "plan.md").write_text("\n".join(lines) + "\n")
    print((args.out / "plan.md").read_text())


if __name__ == "__main__":
    main()
