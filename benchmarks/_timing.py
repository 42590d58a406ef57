"""Timing shared by the benchmark scripts."""

import statistics
import time

import torch


def timed(fn, device, iters):
    """Seconds per call of ``fn`` (median of ``iters`` after two warm-up calls), the device synchronised around each."""
    times = []
    for i in range(iters + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def save_profile(results, table, out, name):
    """Print ``results`` and the profiler ``table``; write them to ``out/<name>.json`` and ``.txt``."""
    import json
    import os

    print(json.dumps(results, indent=1))
    print(table)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write(table)
