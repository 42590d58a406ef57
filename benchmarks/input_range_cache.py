#!/usr/bin/env python
"""aihwkit's input-range calibration (``CACHE_QUANTILE``) with the lean cache hook against aihwkit's own hook: the
same input ranges bit for bit, and the time and memory of each.

For a task's noise-table config (``aihwkit_nabn/tasks/<task>/noise.toml``, one noise setting), each variant runs in
a fresh process of this script: the comparison's digital model, converted and calibrated on the config's
``input_range_samples`` training images as the comparison deploys it (``Comparison.analog_model``), with the lean
hook (``aihwkit_nabn._aihwkit.input_ranges.lean_cache_pre_forward``, the default) or aihwkit's. Recorded per
variant: the seconds of the deployment, the process's peak host memory (``ru_maxrss``), on CUDA the peak of
allocated GPU memory, and every tile's input range; then whether the ranges are equal. ``--limit-gib`` caps each
process's address space on the CPU (aihwkit's hook copies every input row: on 128 CamVid images it passed 16 GiB),
so a variant past it is recorded as such instead of taking the host's memory. Writes ``--out`` (JSON) and prints it.

    python benchmarks/input_range_cache.py --task camvid --samples 16 --device cpu --limit-gib 18 \\
        --out results/noise_models/input_range_cache_camvid_cpu.json
    python benchmarks/input_range_cache.py --task camvid --data /tmp/data/camvid --device cuda --out <file>   (GPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from aihwkit_nabn._aihwkit.state import input_ranges  # noqa: E402
from aihwkit_nabn.evaluation.comparison import Comparison, load_config  # noqa: E402
from aihwkit_nabn.evaluation.noise_table import setting_config  # noqa: E402
from aihwkit_nabn.tasks import get_task  # noqa: E402
from aihwkit_nabn.utils.provenance import code_commit  # noqa: E402

VARIANTS = ("lean", "stock")


def run_variant(args: argparse.Namespace) -> dict:
    """Deploy the config's first model with one hook in this process; return its record."""
    if args.limit_gib and args.device == "cpu":
        limit = int(args.limit_gib * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    config = load_config(str(ROOT / f"aihwkit_nabn/tasks/{args.task}/noise.toml"))
    sub = setting_config(config, args.setting)
    if args.samples:
        sub["hardware"]["input_range_samples"] = args.samples
    if args.data:
        sub["data"]["source"] = args.data
    cmp = Comparison(get_task(args.task), sub, base=ROOT, device=args.device, progress=False)
    name = next(iter(config["models"]))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        _, analog = cmp.analog_model(name, lean_cache=args.variant == "lean")
    except (RuntimeError, MemoryError) as err:  # the address-space cap, or CUDA out of memory
        return {"variant": args.variant, "failed": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
                "seconds": round(time.perf_counter() - start, 1)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    record = {"variant": args.variant, "model": name, "seconds": round(time.perf_counter() - start, 2),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
              "input_ranges": input_ranges(analog)}
    if device.type == "cuda":
        record["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--setting", default="pcm")
    p.add_argument("--samples", type=int, default=None, help="input-range images (default: the config's)")
    p.add_argument("--data", default=None, help="the task's data folder or archive (default: the config's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit-gib", type=float, default=None, help="address-space cap per process (CPU only)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=None)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process: one variant
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "commit": code_commit(),
              "torch": torch.__version__, "device": args.device, "variants": {}}
    for variant in args.variants.split(","):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant],
                               capture_output=True, text=True, check=False)
        lines = child.stdout.strip().splitlines()
        record["variants"][variant] = json.loads(lines[-1]) if child.returncode == 0 and lines else \
            {"variant": variant, "failed": f"exit {child.returncode}: {child.stderr.strip().splitlines()[-1:]}"}
        if args.out:  # after each variant: a run stopped during the next keeps this one
            Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    ranges = [v.get("input_ranges") for v in record["variants"].values()]
    record["ranges_equal"] = (all(r is not None for r in ranges) and all(r == ranges[0] for r in ranges)) \
        if len(ranges) > 1 else None
    text = json.dumps(record, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
