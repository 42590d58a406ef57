"""GPU benchmark: ResNet-32 (CIFAR) digital vs stock aihwkit vs fused forward, batch 512.

python bench_fused.py [--batch 512] [--reps 10] [--presets pcm,hwa] [--out $OUT/bench_fused.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from aihwkit.nn.conversion import convert_to_analog

from aihwkit_nabn._aihwkit import fused as fused_analog  # noqa: E402
from aihwkit_nabn._aihwkit.fused import STATS, install, speculative, uninstall
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the configs of the equivalence tests
from test_fused import hwa_config, pcm_config

# ------------------------------------------------------------------ ResNet-32 (option-A), copied


class ShortcutA(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.stride, self.pad = stride, planes - in_planes

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            before = self.pad // 2
            x = F.pad(x, (0, 0, 0, 0, before, self.pad - before))
        return x


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (
            ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    def __init__(self, num_blocks=5, num_classes=10, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for i, width in enumerate(widths):
            blocks = []
            for b in range(num_blocks):
                blocks.append(BasicBlock(in_planes, width, (1 if i == 0 else 2) if b == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ------------------------------------------------------------------ timing


def time_fn(fn, reps, warmup=2):
    if not torch.cuda.is_available():  # CPU smoke runs
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), times
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), times


def bitwise_equal(a, b):
    return a.shape == b.shape and a.stride() == b.stride() and bool(
        (a.view(torch.int32) == b.view(torch.int32)).all()
    )


def kernel_profile(fn):
    """GPU kernel time by kernel name for one call (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    rows = {}
    for evt in prof.key_averages():
        dev_t = getattr(evt, "self_device_time_total", None)
        if dev_t is None:
            dev_t = getattr(evt, "self_cuda_time_total", 0)
        if dev_t and dev_t > 0:
            rows[evt.key[:80]] = (round(dev_t / 1000.0, 3), evt.count)
    top = sorted(rows.items(), key=lambda kv: -kv[1][0])[:14]
    total = round(sum(v[0] for v in rows.values()), 3)
    return {"gpu_ms_total_self": total, "top": [[k, v[0], v[1]] for k, v in top]}


def cuda_graph(model, x, ref, ref_next, reps):
    """Capture the whole fused forward in one CUDA graph; replay from the same RNG state."""
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_x)
    torch.manual_seed(11)
    graph.replay()
    nxt = torch.randn(4, device=x.device)
    eq = bitwise_equal(ref, static_out) and torch.equal(ref_next, nxt)
    g_ms, _ = time_fn(graph.replay, reps, warmup=2)
    return {"graph_ms": round(g_ms, 3), "graph_bitwise_equal": eq}


def _grads_equal(ma, mb):
    pa = [p for p in ma.parameters() if p.requires_grad]
    pb = [p for p in mb.parameters() if p.requires_grad]
    ok = len(pa) == len(pb)
    n_cmp = 0
    for a, b in zip(pa, pb):
        if (a.grad is None) != (b.grad is None):
            return False, n_cmp
        if a.grad is not None:
            n_cmp += 1
            ok = ok and bitwise_equal(a.grad, b.grad)
    return ok, n_cmp


def _params_equal(ma, mb):
    return all(torch.equal(a.detach(), b.detach()) for a, b in zip(ma.parameters(), mb.parameters()))


def _step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def train_records(digital, x, y, dev, reps, presets, model_name):
    """hwa_step (train-mode tiles, HWA preset, AnalogSGD) and bn_step (eval tiles, BN-only grads)."""
    from aihwkit.optim import AnalogSGD  # pylint: disable=import-outside-toplevel

    recs = []
    # digital references
    d_train = copy.deepcopy(digital).train()
    opt = torch.optim.SGD(d_train.parameters(), lr=0.01)
    d_step_ms, _ = time_fn(_step_fn(d_train, opt, x, y), reps, warmup=3)
    d_bn = copy.deepcopy(digital).eval()
    for name, p in d_bn.named_parameters():
        p.requires_grad_(isinstance(dict(d_bn.named_modules())[name.rsplit(".", 1)[0]], nn.BatchNorm2d))
    opt = torch.optim.SGD([p for p in d_bn.parameters() if p.requires_grad], lr=0.01)
    d_bn_ms, _ = time_fn(_step_fn(d_bn, opt, x, y), reps, warmup=3)
    print(f"digital train step {d_step_ms:.3f} ms, digital BN-only step {d_bn_ms:.3f} ms", flush=True)
    base = {"model": model_name, "batch": x.shape[0], "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "torch": torch.__version__}
    # hwa_step
    if "hwa" in presets:
        rec = dict(base, preset="hwa", mode="hwa_step", digital_ms=round(d_step_ms, 3))
        try:
            analog = convert_to_analog(copy.deepcopy(digital), hwa_config()).to(dev)
            analog.train()
            for tile in analog.analog_tiles():
                tile.input_range_update_idx.data.fill_(1e6)  # as after the data initialisation batches
            models = [copy.deepcopy(analog), copy.deepcopy(analog)]
            install(models[1])
            opts = [AnalogSGD(m.parameters(), lr=0.01) for m in models]
            losses, nxts = [], []
            for m, o in zip(models, opts):
                torch.manual_seed(21)
                STATS.reset()
                losses.append(_step_fn(m, o, x, y)().detach())
                nxts.append(torch.randn(4, device=dev))
            geq, ncmp = _grads_equal(*models)
            rec.update(bitwise_equal=bool(geq and torch.equal(*losses) and _params_equal(*models)
                                          and torch.equal(*nxts)),
                       grads_bitwise_equal=geq, grads_compared=ncmp, loss_equal=bool(torch.equal(*losses)),
                       params_after_step_equal=_params_equal(*models), rng_equal=bool(torch.equal(*nxts)),
                       fused_tiles=STATS.tiles)
            print("hwa_step check", json.dumps(rec), flush=True)
            s_ms, _ = time_fn(_step_fn(models[0], opts[0], x, y), max(2, reps // 3), warmup=1)
            f_ms, f_all = time_fn(_step_fn(models[1], opts[1], x, y), reps, warmup=2)
            rec.update(stock_ms=round(s_ms, 3), accelerated_ms=round(f_ms, 3), accelerated_times=[round(t, 3) for t in f_all],
                       vs_digital=round(f_ms / d_step_ms, 2), vs_stock=round(s_ms / f_ms, 2))
            try:
                rec["profile_fused"] = kernel_profile(_step_fn(models[1], opts[1], x, y))
            except Exception as exc:  # pylint: disable=broad-except
                rec["profile_error"] = repr(exc)[:200]
        except Exception as exc:  # pylint: disable=broad-except
            import traceback  # pylint: disable=import-outside-toplevel
            traceback.print_exc()
            rec["error"] = repr(exc)[:400]
        print(json.dumps({k: v for k, v in rec.items() if k not in ("profile_fused", "accelerated_times")}), flush=True)
        recs.append(rec)
        models = analog = None
        torch.cuda.empty_cache()
    # bn_step
    for preset in presets:
        rec = dict(base, preset=preset, mode="bn_step", digital_ms=round(d_bn_ms, 3))
        try:
            analog = convert_to_analog(copy.deepcopy(digital), pcm_config() if preset == "pcm" else hwa_config()).to(dev).eval()
            analog.program_analog_weights()
            analog.drift_analog_weights(3600.0 * 24 * 365)
            mods = dict(analog.named_modules())
            for name, p in analog.named_parameters():
                p.requires_grad_(isinstance(mods[name.rsplit(".", 1)[0]], nn.BatchNorm2d))
            models = [copy.deepcopy(analog), copy.deepcopy(analog)]
            install(models[1])
            opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01) for m in models]
            losses, nxts = [], []
            for m, o in zip(models, opts):
                torch.manual_seed(22)
                STATS.reset()
                losses.append(_step_fn(m, o, x, y)().detach())
                nxts.append(torch.randn(4, device=dev))
            geq, ncmp = _grads_equal(*models)
            rec.update(bitwise_equal=bool(geq and torch.equal(*losses) and _params_equal(*models) and torch.equal(*nxts)),
                       grads_bitwise_equal=geq, grads_compared=ncmp, loss_equal=bool(torch.equal(*losses)),
                       rng_equal=bool(torch.equal(*nxts)), fused_tiles=STATS.tiles, host_syncs=STATS.host_syncs)
            s_ms, _ = time_fn(_step_fn(models[0], opts[0], x, y), max(2, reps // 3), warmup=1)
            f_ms, f_all = time_fn(_step_fn(models[1], opts[1], x, y), reps, warmup=2)
            rec.update(stock_ms=round(s_ms, 3), accelerated_ms=round(f_ms, 3), accelerated_times=[round(t, 3) for t in f_all],
                       vs_digital=round(f_ms / d_bn_ms, 2), vs_stock=round(s_ms / f_ms, 2))
        except Exception as exc:  # pylint: disable=broad-except
            import traceback  # pylint: disable=import-outside-toplevel
            traceback.print_exc()
            rec["error"] = repr(exc)[:400]
        print(json.dumps({k: v for k, v in rec.items() if k != "accelerated_times"}), flush=True)
        recs.append(rec)
        models = analog = None
        torch.cuda.empty_cache()
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--presets", default="pcm,hwa")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench_fused.json"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--blocks", type=int, default=5, help="basic blocks per stage (5: ResNet-32)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default="inference,train")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    digital = ResNetCIFAR(args.blocks).to(dev)
    with torch.no_grad():  # give BN non-trivial statistics
        digital.train()
        for _ in range(3):
            digital(torch.randn(256, 3, 32, 32, device=dev))
    digital.eval()
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    records = []
    with torch.no_grad():
        d_ms, _ = time_fn(lambda: digital(x), args.reps, warmup=3)
    print(f"digital: {d_ms:.3f} ms", flush=True)

    def dump():
        with open(args.out, "w") as fh:
            json.dump(records, fh, indent=1)

    modes = args.modes.split(",")
    if "train" in modes:
        y = torch.randint(0, 10, (args.batch,), device=dev)
        records.extend(train_records(digital, x, y, dev, args.reps, args.presets.split(","),
                                     f"resnet{6 * args.blocks + 2}"))
        dump()
    for preset in (args.presets.split(",") if "inference" in modes else []):
        rpu = pcm_config() if preset == "pcm" else hwa_config()
        t0 = time.time()
        analog = convert_to_analog(copy.deepcopy(digital), rpu).to(dev).eval()
        analog.program_analog_weights()
        analog.drift_analog_weights(3600.0 * 24 * 365)
        print(f"[{preset}] converted + programmed + drifted in {time.time() - t0:.1f} s", flush=True)
        rec = {"model": f"resnet{6 * args.blocks + 2}", "batch": args.batch, "preset": preset, "mode": "inference",
               "digital_ms": round(d_ms, 3), "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
               "torch": torch.__version__}
        with torch.no_grad():
            uninstall(analog)
            s_ms, s_all = time_fn(lambda: analog(x), max(3, args.reps // 2), warmup=1)
            torch.manual_seed(11)
            ref = analog(x)
            ref_next = torch.randn(4, device=dev)
            rec.update(stock_ms=round(s_ms, 3), stock_times=[round(t, 3) for t in s_all])
            for mode in ("exact", "speculative"):
                (install if mode == "exact" else speculative)(analog)
                torch.manual_seed(11)
                STATS.reset()
                out = analog(x)
                out_next = torch.randn(4, device=dev)
                stats = dict(tiles=STATS.tiles, iterations=STATS.iterations, host_syncs=STATS.host_syncs,
                             zero_shortcuts=STATS.zero_shortcuts, spec_reruns=STATS.spec_reruns)
                f_ms, f_all = time_fn(lambda: analog(x), args.reps, warmup=2)
                eq = bitwise_equal(ref, out) and torch.equal(ref_next, out_next)
                rec[mode] = dict(ms=round(f_ms, 3), bitwise_equal=eq, torch_equal=bool(torch.equal(ref, out)),
                                 rng_equal=bool(torch.equal(ref_next, out_next)),
                                 max_abs_diff=float((ref - out).abs().max()), stats=stats,
                                 times=[round(t, 3) for t in f_all])
                print(preset, mode, json.dumps({k: v for k, v in rec[mode].items() if k != "times"}), flush=True)
                uninstall(analog)
            best = min(("exact", "speculative"), key=lambda k: rec[k]["ms"])
            rec.update(accelerated_ms=rec[best]["ms"], accelerated_mode=best,
                       bitwise_equal=rec["exact"]["bitwise_equal"] and rec["speculative"]["bitwise_equal"],
                       vs_digital=round(rec[best]["ms"] / d_ms, 2), vs_stock=round(s_ms / rec[best]["ms"], 2))
            install(analog)
            if preset == "hwa":
                try:
                    rec.update(cuda_graph(analog, x, ref, ref_next, args.reps))
                except Exception as exc:  # pylint: disable=broad-except
                    rec["cuda_graph_error"] = repr(exc)[:300]
                print("graph:", {k: v for k, v in rec.items() if k.startswith("graph")},
                      rec.get("cuda_graph_error"), flush=True)
            uninstall(analog)
            speculative(analog)
            if args.profile:
                rec["profile_fused"] = kernel_profile(lambda: analog(x))
                print(json.dumps(rec["profile_fused"]), flush=True)
            if args.sweep:
                sweep = []
                configs = [{}, {"prepad": False}, {"in_block_m": 128}, {"in_warps": 8}]
                for cfg in configs:
                    fused_analog.TUNE.clear()
                    fused_analog.TUNE.update(fused_analog.TUNE_DEFAULT)
                    fused_analog.TUNE.update(cfg)
                    try:
                        if preset == "hwa":
                            uninstall(analog)
                            install(analog)
                            got = cuda_graph(analog, x, ref, ref_next, 5)
                            ms, ok = got["graph_ms"], got["graph_bitwise_equal"]
                            uninstall(analog)
                            speculative(analog)
                        else:
                            torch.manual_seed(11)
                            ok = bitwise_equal(ref, analog(x))
                            ms, _ = time_fn(lambda: analog(x), 5, warmup=1)
                        sweep.append([cfg, round(ms, 3), ok])
                    except Exception as exc:  # pylint: disable=broad-except
                        sweep.append([cfg, repr(exc)[:200]])
                    print("sweep", preset, sweep[-1], flush=True)
                fused_analog.TUNE.clear()
                fused_analog.TUNE.update(fused_analog.TUNE_DEFAULT)
                rec["sweep"] = sweep
            uninstall(analog)
            print(json.dumps({k: v for k, v in rec.items() if k not in ("exact", "speculative", "stock_times", "profile_fused")}), flush=True)
        records.append(rec)
        dump()
        analog = None  # free before the next preset
        torch.cuda.empty_cache()
    dump()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
