"""Peak host memory of deploying one noise setting's models for a task, on the CPU: the data, the analog model with
aihwkit's input-range calibration (CACHE_QUANTILE over the config's ``input_range_samples`` images) and the HWA model.

It tells how many noise-table processes can share the GPU (``PARALLEL`` of ``gpu_noise_dense.sh``): the
calibration's cache is the largest allocation outside BN fine-tuning, whose peak the comparison's ``costs.md``
records. A CPU measurement of host memory, not of GPU memory; the tensors are the same size.

Usage: python examples/reproduce/deploy_memory.py --task pennfudan --setting pcm --out results/noise_models/deploy_memory_pennfudan.json
``--limit-gib`` stops the process (recording that the limit was passed, and where) before it takes the host's memory.
"""

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.comparison import Comparison, load_config
from aihwkit_nabn.evaluation.noise_table import setting_config
from aihwkit_nabn.utils.provenance import code_commit


def _peak_gib() -> float:
    # ru_maxrss is in KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


def _watch(limit_gib: float, record: dict, out: Path) -> None:
    """Poll the process's peak memory; past ``limit_gib`` write ``record`` with the stage reached and exit at once."""
    while True:
        if _peak_gib() > limit_gib:
            record["exceeded_limit_gib"] = limit_gib
            out.write_text(json.dumps(record, indent=1) + "\n")
            print(json.dumps(record), flush=True)
            os._exit(3)  # from a thread: nothing else may run on, e.g. a cache still growing
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--setting", default="pcm")
    p.add_argument("--out", required=True)
    p.add_argument("--limit-gib", type=float, default=None, help="stop past this peak (the host's memory is finite)")
    args = p.parse_args()
    record = {"command": f"python examples/reproduce/deploy_memory.py --task {args.task} --setting {args.setting} "
                         f"--out {args.out}" + (f" --limit-gib {args.limit_gib:g}" if args.limit_gib else ""),
              "commit": code_commit(), "stage": "setup"}
    if args.limit_gib:
        threading.Thread(target=_watch, args=(args.limit_gib, record, Path(args.out)), daemon=True).start()
    config = load_config(f"aihwkit_nabn/tasks/{args.task}/noise.toml")
    sub = setting_config(config, args.setting)
    start = time.perf_counter()
    cmp = Comparison(nb.get_task(args.task), sub, base=Path.cwd(), device="cpu", progress=False)
    record["setup"] = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": _peak_gib()}
    record["stage"] = "deploy"
    start = time.perf_counter()
    for name in config["models"]:
        cmp.model(name, needs_hwa=True)
    record["deploy"] = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": _peak_gib(),
                        "input_range_samples": sub["hardware"].get("input_range_samples")}
    record["stage"] = "done"
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
