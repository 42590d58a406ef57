#!/usr/bin/env python
"""Speed of the analog paths against the digital model, all measured in one run: ``speed_<device>.json``.

For each CIFAR ResNet and preset (``pcm``: :class:`PCMInferencePreset`; ``hwa``: :class:`TorchHWAPreset`),
programmed and drifted to one year, at ``--batch-size``:

* ``inference``: one forward in eval mode without autograd -- the digital model, aihwkit's stock torch
  tile, and the package's accelerated layers as shipped (on CUDA: the fused Triton kernels where they
  apply, the exact torch path elsewhere; ``accelerated_torch_ms``: the torch path alone,
  ``AIHWKIT_NABN_FUSED=0``); ``bitwise_equal``: stock and accelerated outputs from the same random state
  are identical. On CUDA, for a preset without host synchronisation (``hwa``) the accelerated forward is
  also replayed as one CUDA graph (``mode: inference_graph``).
* ``hwa_step``: forward + backward + optimizer step in training mode (``hwa`` preset, AnalogSGD) against a
  digital SGD step; ``bitwise_equal``: the weights after one step.
* ``calibrate_1024``: :func:`calibrate_bn` on 1,024 images in batches of 256 (``pcm``, ResNet-32 and the
  others), stock vs accelerated.

Every record: ``{"model", "batch", "preset", "mode", "digital_ms", "stock_ms", "accelerated_ms",
"bitwise_equal", "device", "torch", ...}`` (median over ``--iters`` interleaved repetitions after warm-up;
peak memory on CUDA). Run alone on the device: ratios come from one run.

    python benchmarks/bench_speed.py --device cuda --out results/benchmarks        # the committed numbers
    python benchmarks/bench_speed.py --device cpu --batch-size 32 --models resnet20 --iters 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
import aihwkit  # noqa: E402
from aihwkit.optim import AnalogSGD  # noqa: E402

import aihwkit_nabn as nb  # noqa: E402
from aihwkit_nabn._aihwkit import accelerated  # noqa: E402
from aihwkit_nabn._aihwkit.fused import STATS  # noqa: E402
from aihwkit_nabn._aihwkit.input_ranges import init_input_ranges  # noqa: E402
from aihwkit_nabn.utils.devices import device_name  # noqa: E402

ONE_YEAR = 365 * 86400.0
PRESETS = {"pcm": nb.PCMInferencePreset, "hwa": nb.TorchHWAPreset}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fns: Dict[str, Callable[[], Any]], device: torch.device, warmup: int, iters: int) -> Dict[str, Dict]:
    """Median seconds of each callable, timed interleaved (A B C A B C ...); peak memory on CUDA."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for label, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[label].append(time.perf_counter() - start)
    out = {}
    for label, fn in fns.items():
        out[label] = {"ms": 1e3 * statistics.median(times[label]), "min_ms": 1e3 * min(times[label])}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            _sync(device)
            out[label]["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _chip(digital: nn.Module, preset: str, device: torch.device, accelerate: bool) -> nn.Module:
    """The model programmed (seed 0) and drifted to one year, accelerated or with aihwkit's stock layers."""
    model = nb.to_analog(digital, PRESETS[preset](), accelerate=accelerate)
    chip = nb.Chip(model, seed=0, device=device).drift_to(ONE_YEAR)
    return chip.model.eval()


def _infer(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def run():
        with torch.no_grad():
            return model(x)

    return run


def _graph(model: nn.Module, x: torch.Tensor, device: torch.device) -> Optional[Callable[[], Any]]:
    """The eval forward captured as one CUDA graph (None where capture fails, e.g. a host sync)."""
    try:
        static = x.clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):
                model(static)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            out = model(static)
        return lambda: (graph.replay(), out)[1]
    except Exception as exc:  # pylint: disable=broad-except
        print(f"CUDA graph capture failed: {type(exc).__name__}: {exc}")
        return None


def bench_inference(name: str, preset: str, args: argparse.Namespace, device: torch.device) -> List[Dict]:
    torch.manual_seed(0)
    digital, _ = nb.load_pretrained(name)
    digital = digital.to(device).eval()
    stock, acc = _chip(digital, preset, device, False), _chip(digital, preset, device, True)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    outs = []
    for model in (stock, acc):
        torch.manual_seed(123)
        with torch.no_grad():
            outs.append(model(x))
    bitwise = bool(torch.equal(outs[0], outs[1]))
    del outs
    STATS.reset()
    with torch.no_grad():
        acc(x)
    fused_tiles, syncs = STATS.tiles, STATS.host_syncs

    def torch_path():
        accelerated.set_fused(False)
        try:
            return _infer(acc, x)()
        finally:
            accelerated.set_fused(True)

    fns = {"digital": _infer(digital, x), "stock": _infer(stock, x), "accelerated": _infer(acc, x)}
    if device.type == "cuda":
        fns["accelerated_torch"] = torch_path
    res = measure(fns, device, args.warmup, args.iters)
    record = {"model": name, "batch": args.batch_size, "preset": preset, "mode": "inference",
              "digital_ms": res["digital"]["ms"], "stock_ms": res["stock"]["ms"],
              "accelerated_ms": res["accelerated"]["ms"], "bitwise_equal": bitwise,
              "accelerated_torch_ms": res.get("accelerated_torch", {}).get("ms"),
              "fused_tiles_per_forward": fused_tiles, "host_syncs_per_forward": syncs,
              "peak_mib": {k: v.get("peak_mib") for k, v in res.items()}}
    records = [record]
    if device.type == "cuda" and syncs == 0 and fused_tiles > 0:
        replay = _graph(acc, x, device)
        if replay is not None:
            torch.manual_seed(123)
            with torch.no_grad():
                ref = stock(x)
            torch.manual_seed(123)
            graph_out = replay()
            graph_res = measure({"digital": _infer(digital, x), "graph": replay}, device, args.warmup, args.iters)
            records.append({**record, "mode": "inference_graph", "digital_ms": graph_res["digital"]["ms"],
                            "accelerated_ms": graph_res["graph"]["ms"],
                            "bitwise_equal": bool(torch.equal(ref, graph_out)), "peak_mib": None})
    return records


def bench_hwa_step(name: str, args: argparse.Namespace, device: torch.device) -> Dict:
    torch.manual_seed(0)
    digital, _ = nb.load_pretrained(name)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=torch.Generator().manual_seed(3)).to(device)
    # two conversions, not a deep copy: aihwkit registers its weight-gradient hooks at conversion, and
    # copy.deepcopy does not copy tensor hooks
    models = {"stock": nb.to_analog(digital, nb.TorchHWAPreset(), accelerate=False).to(device).train(),
              "accelerated": nb.to_analog(digital, nb.TorchHWAPreset(), accelerate=True).to(device).train()}
    # the steps of a run, not its first init_from_data batches (aihwkit initialises the input ranges from data
    # there, on the stock path): initialise them first, identically, with aihwkit's own mechanism
    for model in models.values():
        torch.manual_seed(11)
        init_input_ranges(model, (x[:64] for _ in iter(int, 1)))
    digital = copy.deepcopy(digital).to(device).train()
    opts = {k: AnalogSGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    d_opt = torch.optim.SGD(digital.parameters(), lr=1e-3)

    def step(model, opt):
        def run():
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    with nb.input_range_fix():
        first = {}
        for key, model in models.items():
            torch.manual_seed(7)
            step(model, opts[key])()
            first[key] = {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        bitwise = all(torch.equal(first["stock"][k], first["accelerated"][k]) for k in first["stock"])
        res = measure({"digital": step(digital, d_opt), "stock": step(models["stock"], opts["stock"]),
                       "accelerated": step(models["accelerated"], opts["accelerated"])},
                      device, args.warmup, args.iters)
    return {"model": name, "batch": args.batch_size, "preset": "hwa", "mode": "hwa_step",
            "digital_ms": res["digital"]["ms"], "stock_ms": res["stock"]["ms"],
            "accelerated_ms": res["accelerated"]["ms"], "bitwise_equal": bitwise,
            "peak_mib": {k: v.get("peak_mib") for k, v in res.items()}}


def bench_calibration(name: str, args: argparse.Namespace, device: torch.device) -> Dict:
    torch.manual_seed(0)
    digital, _ = nb.load_pretrained(name)
    digital = digital.to(device).eval()
    stock, acc = _chip(digital, "pcm", device, False), _chip(digital, "pcm", device, True)
    images = torch.randn(1024, 3, 32, 32, generator=torch.Generator().manual_seed(4)).to(device)
    snaps = {}
    for key, model in (("stock", stock), ("accelerated", acc)):
        torch.manual_seed(9)
        undo = nb.calibrate_bn(model, images, num_samples=1024, batch_size=256)
        snaps[key] = nb.snapshot_bn(model)
        undo.restore(model)
    bitwise = snaps["stock"].equals(snaps["accelerated"])

    def calib(model):
        def run():
            nb.calibrate_bn(model, images, num_samples=1024, batch_size=256).restore(model)
        return run

    def digital_calib():
        nb.calibrate_bn(digital, images, num_samples=1024, batch_size=256).restore(digital)

    res = measure({"digital": digital_calib, "stock": calib(stock), "accelerated": calib(acc)}, device,
                  max(1, args.warmup // 2), max(3, args.iters // 3))
    return {"model": name, "batch": 256, "preset": "pcm", "mode": "calibrate_1024",
            "digital_ms": res["digital"]["ms"], "stock_ms": res["stock"]["ms"],
            "accelerated_ms": res["accelerated"]["ms"], "bitwise_equal": bitwise,
            "peak_mib": {k: v.get("peak_mib") for k, v in res.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="resnet20,resnet32,resnet56")
    parser.add_argument("--presets", default="pcm,hwa")
    parser.add_argument("--modes", default="inference,hwa_step,calibrate_1024")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    meta = {"device": device_name(device),
            "torch": str(torch.__version__), "aihwkit": aihwkit.__version__, "platform": platform.platform(),
            # the device machine gets a copy of the working tree without .git: the caller passes the commit
            "commit": os.environ.get("AIHWKIT_NABN_COMMIT") or subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "command": "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    records: List[Dict] = []
    modes = args.modes.split(",")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"speed_{device.type}.json")

    def add(new: List[Dict]) -> None:
        """Keep the record and rewrite the file, so an interrupted run keeps what it measured."""
        for record in new:
            record.update(device=meta["device"], torch=meta["torch"])
            records.append(record)
            print(json.dumps(record), flush=True)
        with open(path, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)

    for name in args.models.split(","):
        if "inference" in modes:
            for preset in args.presets.split(","):
                add(bench_inference(name, preset, args, device))
        if "hwa_step" in modes:
            add([bench_hwa_step(name, args, device)])
        if "calibrate_1024" in modes:
            add([bench_calibration(name, args, device)])
    print(f"\n{'model':9} {'preset':6} {'mode':16} {'digital':>9} {'stock':>9} {'accel':>9} {'x digital':>9} "
          f"{'x stock':>8} bitwise")
    for r in records:
        print(f"{r['model']:9} {r['preset']:6} {r['mode']:16} {r['digital_ms']:9.2f} {r['stock_ms']:9.2f} "
              f"{r['accelerated_ms']:9.2f} {r['accelerated_ms'] / r['digital_ms']:9.2f} "
              f"{r['stock_ms'] / r['accelerated_ms']:8.2f} {r['bitwise_equal']}")
    print("wrote", path)


if __name__ == "__main__":
    main()
