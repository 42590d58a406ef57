#!/usr/bin/env python
"""Where the time of a detector's BN fine-tuning step goes on an analog chip (vs HWA training and inference).

On the H200, a Penn-Fudan ``bnft`` unit (40 steps, batch 4) took 77 s while an HWA training epoch of the same
detector (25 steps, batch 4, plus a val pass) took 9.5 s. This script times, on one programmed and drifted chip
of a detector checkpoint, with CUDA synchronisation around every step:

* ``hwa_train``: tiles in training mode (HWA), forward + backward of the detector's losses;
* ``bnft``: the BN fine-tuning step (tiles in eval, only BatchNorm affine parameters require grad);
* ``bnft_stock``: the same with aihwkit's stock layer forwards (acceleration removed);
* ``eval``: the inference forward without autograd;

and prints and saves a profiler table of one ``bnft`` step. Writes ``profile_detector_bnft.json`` and
``.txt`` into ``--out``.

    python benchmarks/profile_detector_bnft.py --model runs/pennfudan/chosen.pt --device cuda --out /tmp/out
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from _timing import save_profile, timed  # noqa: E402  (benchmarks/, the script's own folder)
import aihwkit_nabn.tasks  # noqa: F401  (registers the detectors)
from aihwkit_nabn._aihwkit.accelerated import restore_stock
from aihwkit_nabn.analog.chips import Chip
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.bn.finetune import FrozenModel, bn_parameters
from aihwkit_nabn.tasks.pennfudan.task import DetectionBatch, detector_losses, sum_of_losses
from aihwkit_nabn.training.checkpoints import load_model_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default=".")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    _, digital, _ = load_model_spec(a.model)
    images = [torch.rand(3, 360 + 20 * i, 480, device=dev) for i in range(a.batch_size)]
    targets = [{"boxes": torch.tensor([[50., 40., 150., 300.]], device=dev), "labels": torch.tensor([1], device=dev)}
               for _ in range(a.batch_size)]
    batch = DetectionBatch(images, targets)
    analog = to_analog(digital, TorchHWAPreset(), accelerate=True).to(dev)
    chip = Chip(analog, 0, device=dev).drift_to(3600.0)
    stock = copy.deepcopy(chip.model)
    restore_stock(stock)
    results = {"model": a.model, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "batch_size": a.batch_size, "torch": torch.__version__}

    def hwa_step():
        analog.train()
        sum(analog(images, targets).values()).backward()

    def bnft_step(model):
        sum_of_losses(detector_losses(model, batch)).backward()

    results["hwa_train_s"] = timed(hwa_step, dev, a.iters)
    analog.eval()
    for name, model in (("bnft", chip.model), ("bnft_stock", stock)):
        with FrozenModel(model, bn_parameters(model), eval_mode=True), torch.enable_grad():
            results[f"{name}_s"] = timed(lambda m=model: bnft_step(m), dev, a.iters)
            if name == "bnft":
                acts = [torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
                with torch.profiler.profile(activities=acts) as prof:
                    bnft_step(model)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
                table = (prof.key_averages().table(sort_by=key, row_limit=30) + "\n\n"
                         + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    with torch.no_grad():
        results["eval_s"] = timed(lambda: chip.model(images), dev, a.iters)
    save_profile(results, table, a.out, "profile_detector_bnft")


if __name__ == "__main__":
    main()
