#!/usr/bin/env python
"""Where the time of one HWA training step goes (CIFAR-10 ResNet, batch 128), against a digital training step.

The fair CIFAR-10 comparison fine-tunes each model hardware-aware for 100-200 epochs at batch 128; on the H200 one
ResNet-32 epoch took 55 s with three runs sharing the GPU, the digital training 2.5 s. This script times, with the
device synchronised around every step and nothing else running:

* ``hwa``: ``fit_hwa``'s step (the accelerated layers: the fused kernels under autograd on CUDA), tiles in
  training mode, ``AnalogSGD`` with its weight remapping and clipping, after the input-range initialisation;
* ``hwa_stock``: the same with aihwkit's stock layer forwards (acceleration removed);
* ``digital``: plain SGD on the digital model at the same batch (fp32, uncompiled);

counts the fused path's host syncs and the kernels launched per step, and saves a profiler table of one ``hwa``
step. Writes ``profile_hwa_step.json`` and ``.txt`` into ``--out``.

    python benchmarks/profile_hwa_step.py --arch resnet32 --device cuda --out /tmp/out
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from _timing import save_profile, timed  # noqa: E402  (benchmarks/, the script's own folder)
from aihwkit.optim import AnalogSGD

from aihwkit_nabn._aihwkit import fused
from aihwkit_nabn._aihwkit.accelerated import restore_stock
from aihwkit_nabn._aihwkit.input_range_fix import input_range_fix
from aihwkit_nabn._aihwkit.input_ranges import init_batches_needed, init_input_ranges
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.training.checkpoints import load_model_spec
from aihwkit_nabn.training.hwa import _param_groups
from aihwkit_nabn.utils.provenance import code_commit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet32", help="a registry name or a checkpoint path")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default=".")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    name, digital, _ = load_model_spec(a.arch)
    x = torch.randn(a.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (a.batch_size,), device=dev)
    results = {"arch": name, "batch_size": a.batch_size, "commit": code_commit(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}

    def sgd_step(model, opt):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        opt.step()

    with input_range_fix():
        analog = to_analog(digital, TorchHWAPreset(), accelerate=True).to(dev)
        init_input_ranges(analog, (torch.randn_like(x) for _ in range(init_batches_needed(analog))))
        stock = copy.deepcopy(analog)
        restore_stock(stock)
        for model_name, model in (("hwa", analog), ("hwa_stock", stock)):
            model.train()
            opt = AnalogSGD(_param_groups(model, 5e-4), lr=1e-3, momentum=0.9, nesterov=True)
            syncs = fused.STATS.host_syncs
            results[f"{model_name}_s"] = timed(lambda m=model, o=opt: sgd_step(m, o), dev, a.iters)
            results[f"{model_name}_host_syncs_per_step"] = (fused.STATS.host_syncs - syncs) / (a.iters + 2)
            if model_name == "hwa":
                acts = [torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
                with torch.profiler.profile(activities=acts) as prof:
                    sgd_step(model, opt)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                events = prof.key_averages()
                results["hwa_kernels_per_step"] = sum(e.count for e in events if e.device_type.name == "CUDA")
                # every aten call, nested ones included: on a GPU most of them launch a kernel of their own
                results["hwa_aten_calls_per_step"] = sum(e.count for e in events if e.key.startswith("aten::"))
                key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
                table = (events.table(sort_by=key, row_limit=30) + "\n\n"
                         + events.table(sort_by="self_cpu_time_total", row_limit=30) + "\n\n"
                         + events.table(sort_by="count", row_limit=30))
    plain = copy.deepcopy(digital).to(dev).train()
    opt = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    results["digital_s"] = timed(lambda: sgd_step(plain, opt), dev, a.iters)
    results["hwa_over_digital"] = results["hwa_s"] / results["digital_s"]
    results["epoch_s_at_45k"] = {k: results[f"{k}_s"] * (45000 // a.batch_size)
                                 for k in ("hwa", "hwa_stock", "digital")}
    save_profile(results, table, a.out, "profile_hwa_step")


if __name__ == "__main__":
    main()
