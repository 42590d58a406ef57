#!/usr/bin/env python
"""Benchmark aihwkit_nabn._aihwkit.accelerated on CIFAR ResNets (digital vs stock
analog vs accelerated analog).

Measures, per model:

* inference images/s at ``--batch-size``: digital, stock analog (PCM preset,
  programmed + drifted, eval, global drift compensation) and accelerated
  analog; the two analog outputs are also checked for bitwise equality from
  the same seed;
* one HWA-style training step (forward + backward + AnalogSGD step, train
  mode, learned input ranges, ADD_NORMAL weight noise): stock vs accelerated;
* peak GPU memory (``torch.cuda.max_memory_allocated``) for each, on CUDA.

Writes ``bench_acceleration_<device>.json`` and ``.md`` into ``--out``.

Examples::

    python benchmarks/bench_acceleration.py                     # CPU, small
    python benchmarks/bench_acceleration.py --device cuda --batch-size 512 --iters 20
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
import aihwkit  # noqa: E402
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel  # noqa: E402
from aihwkit.nn.conversion import convert_to_analog  # noqa: E402
from aihwkit.optim import AnalogSGD  # noqa: E402
from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: E402
from aihwkit.simulator.parameters.enums import (  # noqa: E402
    BoundManagementType,
    NoiseManagementType,
    WeightClipType,
    WeightModifierType,
    WeightRemapType,
)

from aihwkit_nabn._aihwkit.accelerated import accelerate, acceleration_report  # noqa: E402
from aihwkit_nabn.bn.calibrate import calibrate_bn  # noqa: E402
from aihwkit_nabn.training.registry import create_model  # noqa: E402
from aihwkit_nabn.analog.presets import PCMInferencePreset  # noqa: E402


# ------------------------------------------------------------------ models


# ------------------------------------------------------------------ configs


def pcm_config() -> TorchInferenceRPUConfig:
    """The plugin's default inference preset (PCM noise + drift, global drift compensation)."""
    return PCMInferencePreset()


def hwa_config() -> TorchInferenceRPUConfig:
    rpu = TorchInferenceRPUConfig()
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = 512
    rpu.mapping.max_output_size = 0
    rpu.mapping.digital_bias = True
    rpu.mapping.learn_out_scaling = True
    rpu.mapping.out_scaling_columnwise = True
    rpu.forward.inp_res = 254.0
    rpu.forward.out_res = 254.0
    rpu.forward.bound_management = BoundManagementType.NONE
    rpu.forward.noise_management = NoiseManagementType.CONSTANT
    rpu.forward.nm_thres = 1.0
    rpu.forward.out_noise = 0.04
    rpu.forward.out_bound = 10.0
    rpu.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC
    rpu.clip.type = WeightClipType.FIXED_VALUE
    rpu.clip.fixed_value = 1.0
    rpu.modifier.type = WeightModifierType.ADD_NORMAL
    rpu.modifier.std_dev = 0.02
    ir = rpu.pre_post.input_range
    ir.enable = True
    ir.init_value = 3.0
    ir.init_from_data = 100
    ir.init_std_alpha = 3.0
    ir.decay = 0.001
    ir.input_min_percentage = 0.95
    ir.gradient_relative = True
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    return rpu


# ------------------------------------------------------------------ timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fns: Dict[str, Callable[[], Any]], device: torch.device, warmup: int, iters: int
) -> Dict[str, Dict[str, float]]:
    """Time several callables *interleaved* (A B C A B C ...), so that load
    changes on a shared machine hit all of them alike; median of ``iters``.
    On CUDA, the peak memory of each is then measured in a separate call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for label, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[label].append(time.perf_counter() - t0)
    res: Dict[str, Dict[str, float]] = {}
    for label, fn in fns.items():
        res[label] = {
            "median_s": statistics.median(times[label]),
            "mean_s": statistics.fmean(times[label]),
            "min_s": min(times[label]),
        }
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            res[label]["peak_mem_mib"] = peak / 2**20
            res[label]["peak_mem_above_start_mib"] = (peak - base) / 2**20
    return res


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    bs = args.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, 32, 32, generator=gen).to(device)
    target = torch.randint(0, 10, (bs,), generator=gen).to(device)
    out: Dict[str, Any] = {"model": name}

    torch.manual_seed(0)
    digital = create_model(name).to(device).eval()
    out["analog_layers"] = None

    # --- inference -------------------------------------------------------
    torch.manual_seed(0)
    stock = convert_to_analog(copy.deepcopy(digital).cpu(), pcm_config()).to(device).eval()
    torch.manual_seed(1)
    stock.program_analog_weights()
    stock.drift_analog_weights(86400.0)
    acc = accelerate(copy.deepcopy(stock))
    report = acceleration_report(acc)
    out["analog_layers"] = len(report)
    out["accelerated_layers"] = sum(v == "accelerated" for v in report.values())
    out["not_accelerated"] = {k: v for k, v in report.items() if v != "accelerated"}

    def infer(model: nn.Module) -> Callable[[], Any]:
        def _run():
            with torch.no_grad():
                return model(x)

        return _run

    with torch.no_grad():
        torch.manual_seed(123)
        y_s = stock(x)
        torch.manual_seed(123)
        y_a = acc(x)
    out["inference_bitwise_equal"] = bool(torch.equal(y_s, y_a))
    out["inference_max_abs_diff"] = float((y_s - y_a).abs().max())
    del y_s, y_a

    inf: Dict[str, Any] = measure(
        {"digital": infer(digital), "stock": infer(stock), "accelerated": infer(acc)},
        device,
        args.warmup,
        args.iters,
    )
    for label in ("digital", "stock", "accelerated"):
        inf[label]["images_per_s"] = bs / inf[label]["median_s"]
    inf["speedup_accelerated_vs_stock"] = inf["stock"]["median_s"] / inf["accelerated"]["median_s"]
    inf["slowdown_accelerated_vs_digital"] = inf["accelerated"]["median_s"] / inf["digital"]["median_s"]
    out["inference"] = inf

    # --- calibrate_bn on --calib-images images ------------------------------
    calib_x = torch.randn(args.calib_images, 3, 32, 32, generator=gen).to(device)

    def calibrate(model: nn.Module) -> Callable[[], Any]:
        def _run():
            snapshot = calibrate_bn(model, calib_x, num_samples=args.calib_images, batch_size=args.calib_batch)
            snapshot.restore(model)

        return _run

    cal: Dict[str, Any] = measure(
        {"stock": calibrate(stock), "accelerated": calibrate(acc)}, device, 1, max(1, args.iters // 4)
    )
    cal["speedup_accelerated_vs_stock"] = cal["stock"]["median_s"] / cal["accelerated"]["median_s"]
    out["calibrate_bn"] = cal
    del stock, acc

    # --- HWA training step ------------------------------------------------
    if not args.skip_train:
        torch.manual_seed(0)
        hwa_stock = convert_to_analog(copy.deepcopy(digital).cpu(), hwa_config()).to(device).train()
        hwa_acc = accelerate(copy.deepcopy(hwa_stock))
        loss_fn = nn.CrossEntropyLoss()

        def step(model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[], Any]:
            def _run():
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), target)
                loss.backward()
                opt.step()
                return loss

            return _run

        fns = {
            label: step(model, AnalogSGD(model.parameters(), lr=0.01, momentum=0.9))
            for label, model in (("stock", hwa_stock), ("accelerated", hwa_acc))
        }
        train: Dict[str, Any] = measure(fns, device, args.warmup, args.iters)
        for label in fns:
            train[label]["images_per_s"] = bs / train[label]["median_s"]
        train["speedup_accelerated_vs_stock"] = (
            train["stock"]["median_s"] / train["accelerated"]["median_s"]
        )
        out["hwa_train_step"] = train
        del hwa_stock, hwa_acc
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------ output


def to_markdown(res: Dict[str, Any]) -> str:
    env = res["environment"]
    cuda = env["device_type"] == "cuda"
    lines = [
        "# aihwkit_nabn.acceleration benchmark",
        "",
        f"- device: {env['device_name']} ({env['device_type']})",
        f"- torch {env['torch']}, aihwkit {env['aihwkit']}, python {env['python']}",
        f"- batch size {res['args']['batch_size']}, {res['args']['iters']} timed iterations "
        f"(median, stock/accelerated interleaved), {res['args']['warmup']} warm-up",
        "",
        "## Inference (PCM preset, programmed + drifted, eval, no_grad)",
        "",
        "| model | digital img/s | stock analog img/s | accelerated img/s | speed-up | "
        "accel. vs digital | bitwise equal |" + (" peak MiB digital / stock / accel. |" if cuda else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if cuda else ""),
    ]
    for m in res["models"]:
        i = m["inference"]
        row = (
            f"| {m['model']} | {i['digital']['images_per_s']:.1f} | {i['stock']['images_per_s']:.1f} | "
            f"{i['accelerated']['images_per_s']:.1f} | {i['speedup_accelerated_vs_stock']:.2f}x | "
            f"{i['slowdown_accelerated_vs_digital']:.1f}x slower | {m['inference_bitwise_equal']} |"
        )
        if cuda:
            row += (
                f" {i['digital']['peak_mem_mib']:.0f} / {i['stock']['peak_mem_mib']:.0f} / "
                f"{i['accelerated']['peak_mem_mib']:.0f} |"
            )
        lines.append(row)
    if any("hwa_train_step" in m for m in res["models"]):
        lines += [
            "",
            "## HWA training step (forward + backward + AnalogSGD step, train mode)",
            "",
            "| model | stock img/s | accelerated img/s | speed-up |"
            + (" peak MiB stock / accel. |" if cuda else ""),
            "|---|---|---|---|" + ("---|" if cuda else ""),
        ]
        for m in res["models"]:
            t = m.get("hwa_train_step")
            if not t:
                continue
            row = (
                f"| {m['model']} | {t['stock']['images_per_s']:.1f} | "
                f"{t['accelerated']['images_per_s']:.1f} | {t['speedup_accelerated_vs_stock']:.2f}x |"
            )
            if cuda:
                row += f" {t['stock']['peak_mem_mib']:.0f} / {t['accelerated']['peak_mem_mib']:.0f} |"
            lines.append(row)
    lines += [
        "",
        f"## calibrate_bn on {res['args']['calib_images']} images (batch {res['args']['calib_batch']})",
        "",
        "| model | stock s | accelerated s | speed-up |" + (" peak MiB stock / accel. |" if cuda else ""),
        "|---|---|---|---|" + ("---|" if cuda else ""),
    ]
    for m in res["models"]:
        c = m["calibrate_bn"]
        row = (
            f"| {m['model']} | {c['stock']['median_s']:.3f} | {c['accelerated']['median_s']:.3f} | "
            f"{c['speedup_accelerated_vs_stock']:.2f}x |"
        )
        if cuda:
            row += f" {c['stock']['peak_mem_mib']:.0f} / {c['accelerated']['peak_mem_mib']:.0f} |"
        lines.append(row)
    not_acc = {m["model"]: m["not_accelerated"] for m in res["models"] if m["not_accelerated"]}
    if not_acc:
        lines += ["", "## Layers left on the stock path", "", "```", json.dumps(not_acc, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 32 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 on CUDA, 1 on CPU")
    parser.add_argument("--models", default="resnet20,resnet32,resnet56")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument("--calib-images", type=int, default=1024, help="images per calibrate_bn call (default 1024)")
    parser.add_argument("--calib-batch", type=int, default=256, help="calibration batch size (default 256)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    is_cuda = device.type == "cuda"
    if is_cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.batch_size is None:
        args.batch_size = 512 if is_cuda else 32
    if args.iters is None:
        args.iters = 20 if is_cuda else 3
    if args.warmup is None:
        args.warmup = 3 if is_cuda else 1
    if is_cuda:
        torch.cuda.set_device(device)

    env = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if is_cuda else (platform.processor() or platform.machine()),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "aihwkit": aihwkit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results: Dict[str, Any] = {"environment": env, "args": vars(args), "models": []}
    print(f"# {env['device_name']} | torch {env['torch']} | aihwkit {env['aihwkit']} | batch {args.batch_size}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.perf_counter()
        res = bench_model(name, args, device)
        res["wall_s"] = time.perf_counter() - t0
        results["models"].append(res)
        i = res["inference"]
        msg = (
            f"{name}: inference img/s digital {i['digital']['images_per_s']:.1f} | stock "
            f"{i['stock']['images_per_s']:.1f} | accelerated {i['accelerated']['images_per_s']:.1f} "
            f"({i['speedup_accelerated_vs_stock']:.2f}x, bitwise equal: {res['inference_bitwise_equal']})"
        )
        if "hwa_train_step" in res:
            t = res["hwa_train_step"]
            msg += (
                f" | HWA train img/s stock {t['stock']['images_per_s']:.1f} | accelerated "
                f"{t['accelerated']['images_per_s']:.1f} ({t['speedup_accelerated_vs_stock']:.2f}x)"
            )
        print(msg, flush=True)

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench_acceleration_{device.type}")
    with open(stem + ".json", "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    md = to_markdown(results)
    with open(stem + ".md", "w", encoding="utf-8") as fh:
        fh.write(md)
    print(md)
    print(f"saved {stem}.json and {stem}.md")
    return results


if __name__ == "__main__":
    main()
