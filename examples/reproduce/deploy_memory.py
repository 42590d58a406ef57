"""Peak host memory of deploying one noise setting's models for a task, on the CPU: the data, the analog model with
aihwkit's input-range calibration (CACHE_QUANTILE over the config's ``input_range_samples`` images) and the HWA model.

It tells how many noise-table processes can share the GPU (``PARALLEL`` of ``gpu_noise_dense.sh``): the
calibration's cache is the largest allocation outside BN fine-tuning, whose peak the comparison's ``costs.md``
records. A CPU measurement of host memory, not of GPU memory; the tensors are the same size.

Usage: python examples/reproduce/deploy_memory.py --task pennfudan --setting pcm --out results/noise_models/deploy_memory_pennfudan.json
"""

import argparse
import json
import resource
import time
from pathlib import Path

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.comparison import Comparison, load_config
from aihwkit_nabn.evaluation.noise_table import setting_config
from aihwkit_nabn.utils.provenance import code_commit


def _peak_gib() -> float:
    # ru_maxrss is in KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--setting", default="pcm")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    record = {"command": f"python examples/reproduce/deploy_memory.py --task {args.task} --setting {args.setting} "
                         f"--out {args.out}", "commit": code_commit()}
    config = load_config(f"aihwkit_nabn/tasks/{args.task}/noise.toml")
    sub = setting_config(config, args.setting)
    start = time.perf_counter()
    cmp = Comparison(nb.get_task(args.task), sub, base=Path.cwd(), device="cpu", progress=False)
    record["setup"] = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": _peak_gib()}
    start = time.perf_counter()
    for name in config["models"]:
        cmp.model(name, needs_hwa=True)
    record["deploy"] = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": _peak_gib(),
                        "input_range_samples": sub["hardware"].get("input_range_samples")}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
