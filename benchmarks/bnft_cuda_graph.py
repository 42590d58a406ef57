#!/usr/bin/env python
"""BN fine-tuning on a drifted chip with its steps replayed from a CUDA graph against the eager steps: the same
numbers bit for bit, and the speed.

The comparison's own pieces, from a comparison config (default the fair CIFAR-10 one, ``--set`` as for
``reproduce``): the model converted and given input ranges as the grid does, the ``bnft`` method built from the
config (calibration view and size, labeled set, steps, lr, loss, fresh views), chips programmed and drifted as in
the sweep, and each fine-tuning run under the sweep's seeded random stream. For every chip the same fine-tuning
runs twice from the same state and stream: ``finetune_bn(..., cuda_graph=False)`` and ``cuda_graph=True``.
Compared bitwise: every step's loss and every BN parameter and statistic after fine-tuning (and every other tensor
of the model, which must not have moved). Timed: each run (device synchronised), and the median per run over
chips. Writes ``bnft_cuda_graph.json`` into ``--out``: ``bitwise_equal``, and ``choice`` ("graph" when equal and
the graph served the steps, else "eager"); the exit status is 1 when the numbers differ.

    python benchmarks/bnft_cuda_graph.py --set 'models.resnet32.digital="runs/fair/ckpt/resnet32.pt"' \\
        --set data.val_samples=5000 --set bnft.steps=100 --device cuda --out /tmp/out
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from aihwkit_nabn.analog.chips import Chip  # noqa: E402
from aihwkit_nabn.analog.times import parse_time  # noqa: E402
from aihwkit_nabn.evaluation.comparison import Comparison, load_config, parse_overrides  # noqa: E402
from aihwkit_nabn.evaluation.methods import build_method  # noqa: E402
from aihwkit_nabn.tasks import get_task  # noqa: E402
from aihwkit_nabn.utils.provenance import code_commit  # noqa: E402
from aihwkit_nabn.utils.rng import seeded  # noqa: E402


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes (equal NaNs compare equal, -0.0 differs from 0.0)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8) if t.is_floating_point() else t


def _finetune(method, chip, cuda_graph: bool, seed: int, t: float, device: torch.device):
    """One fine-tuning run of ``method``'s recipe on ``chip`` under the sweep's stream; (tensors, info, seconds)."""
    with seeded(seed, "evaluate", t, method.name, device=device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        snapshot = method.finetune(chip.model, cuda_graph=cuda_graph)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    tensors = {k: v.detach().clone() for k, v in chip.model.state_dict().items() if isinstance(v, torch.Tensor)}
    tensors.update({f"loss.{i}": torch.tensor(v, dtype=torch.float64) for i, v in enumerate(snapshot.info["losses"])})
    info = snapshot.info
    snapshot.restore(chip.model)
    return tensors, info, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "aihwkit_nabn/tasks/cifar10/fair.toml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--task", default="cifar10")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--time", default="1y", help="drift time of the chips")
    p.add_argument("--chips", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    task = get_task(args.task)
    # bnft alone, and the val split as the metric's split: the benchmark evaluates nothing, the test split stays unread
    config = load_config(args.config, {**parse_overrides(args.overrides), "sweep.methods": ["bnft"],
                                       "data.eval_split": "val", "retention.models": []})
    cmp = Comparison(task, config, base=ROOT, device=args.device, progress=False)
    method = build_method("bnft", cmp.method_data)
    analog = cmp.model(args.model, needs_hwa=False).analog["default"]
    t = parse_time(args.time)
    seconds = {"eager": [], "graph": []}
    differing, compared, graph_info = {}, 0, []
    for c in range(args.chips):
        chip = Chip(analog, cmp.seed + c, device=device)
        chip.drift_to(t)
        if c == 0:  # warm-up (kernels chosen, caches filled): untimed
            _finetune(method, chip, False, cmp.seed + c, t, device)
        eager, _, s_eager = _finetune(method, chip, False, cmp.seed + c, t, device)
        graph, info, s_graph = _finetune(method, chip, True, cmp.seed + c, t, device)
        seconds["eager"].append(s_eager)
        seconds["graph"].append(s_graph)
        graph_info.append(info.get("graph"))
        compared += len(eager)
        for k in sorted(set(eager) | set(graph)):
            if k not in eager or k not in graph or not torch.equal(_bits(eager[k]), _bits(graph[k])):
                differing[f"chip{c}.{k}"] = (float((eager[k].double() - graph[k].double()).abs().max())
                                             if k in eager and k in graph and eager[k].is_floating_point() else "differs")
        print(f"chip {c}: eager {s_eager:.2f} s, graph {s_graph:.2f} s, {len(differing)} differing so far, "
              f"graph {info.get('graph')}", flush=True)
    served = all(g and g["replays"] > 0 and g["failure"] is None for g in graph_info)
    equal = not differing
    result = {
        "task": args.task, "model": args.model, "time": args.time, "chips": args.chips, "steps": method.steps,
        "lr": method.lr, "finetune_kwargs": {k: str(v) for k, v in method.finetune_kwargs.items()},
        "labeled_samples": method.labeled_samples, "calib_samples": method.num_samples,
        "overrides": args.overrides, "commit": code_commit(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "tensors_compared": compared, "differing": dict(list(differing.items())[:20]), "bitwise_equal": equal,
        "graph": graph_info, "eager_s": statistics.median(seconds["eager"]), "graph_s": statistics.median(seconds["graph"]),
        "seconds": seconds,
    }
    result["speedup"] = result["eager_s"] / result["graph_s"]
    result["choice"] = "graph" if equal and served else "eager"
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "bnft_cuda_graph.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("seconds", "graph")}, indent=1))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
