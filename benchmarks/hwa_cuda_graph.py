#!/usr/bin/env python
"""The HWA training update replayed from a CUDA graph against the eager update: the same numbers bit for bit, and the speed.

Identical copies of a CIFAR-10 ResNet on the accelerated HWA tiles (``TorchHWAPreset``, input ranges
initialised from data) train the same batches from the same random state with ``AnalogSGD`` (lr 0.005,
momentum 0.9, Nesterov, weight decay 5e-4, as the fair comparison's runs): one with the loop's eager update,
one per :class:`~aihwkit_nabn.training.cuda_graph.AnalogGraphedStep` mode (``on``: forward and backward replayed;
``full``: the optimizer step too). The batch sequence has what a real run has: an eval-mode forward between
"epochs" (the validation), one smaller batch (the graph cannot serve it: the eager update runs) and a halved
learning rate (``full`` records its graph again). Compared: every step's loss, and at the end every parameter,
buffer, gradient and optimizer state tensor, bitwise. Then the step time of each (device synchronised, median).
Writes ``hwa_cuda_graph.json`` into ``--out``; the exit status is 1 when any mode's numbers differ.

    python benchmarks/hwa_cuda_graph.py --arch resnet32 --device cuda --out /tmp/out
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from _timing import timed  # noqa: E402  (benchmarks/, the script's own folder)
from aihwkit.optim import AnalogSGD

from aihwkit_nabn._aihwkit.input_range_fix import input_range_fix
from aihwkit_nabn._aihwkit.input_ranges import init_batches_needed, init_input_ranges
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.training.checkpoints import load_model_spec
from aihwkit_nabn.training.cuda_graph import AnalogGraphedStep
from aihwkit_nabn.training.hwa import _param_groups
from aihwkit_nabn.utils.cuda_graph import GRAPH_MODES, eager_update
from aihwkit_nabn.utils.provenance import code_commit


def _state(model, opt):
    """Every tensor of the model and of the optimizer state, by name."""
    out = {f"model.{k}": v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    for i, (p, st) in enumerate(opt.state.items()):
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                out[f"opt.{i}.{k}"] = v
    for i, p in enumerate(model.parameters()):
        if p.grad is not None:
            out[f"grad.{i}"] = p.grad
    return out


def _bits(t):
    """The tensor's bytes (so that equal NaNs compare equal and -0.0 differs from 0.0)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8) if t.is_floating_point() else t


def _differences(a, b):
    """Names whose tensors differ bitwise (NaNs equal where both are NaN), with the largest difference."""
    diffs = {}
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            diffs[k] = "missing on one side"
            continue
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            diffs[k] = f"shape/dtype {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}"
        elif not torch.equal(_bits(x), _bits(y)):
            diffs[k] = float((x.double() - y.double()).abs().max()) if x.is_floating_point() else "integers differ"
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet32", help="a registry name or a checkpoint path")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=24, help="compared steps (an eval and a small batch among them)")
    p.add_argument("--iters", type=int, default=20, help="timed steps of each")
    p.add_argument("--out", default=".")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    name, digital, _ = load_model_spec(a.arch)
    b = a.batch_size
    gen = torch.Generator().manual_seed(1)
    sizes = [b] * a.steps
    sizes[a.steps // 2] = b // 2 + 3  # a smaller batch: served by the eager step
    batches = [(torch.randn(n, 3, 32, 32, generator=gen).to(dev).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (n,), generator=gen).to(dev)) for n in sizes]
    eval_at = {a.steps // 3, (2 * a.steps) // 3}  # an eval-mode forward (validation) before these steps
    halve_at = (3 * a.steps) // 4  # the learning rates halved before this step
    x_eval = torch.randn(64, 3, 32, 32, generator=gen).to(dev)
    results = {"arch": name, "batch_size": b, "steps": a.steps, "commit": code_commit(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}

    with input_range_fix():
        base = to_analog(digital, TorchHWAPreset(), accelerate=True).to(dev)
        init_input_ranges(base, (torch.randn_like(batches[0][0]).contiguous() for _ in range(init_batches_needed(base))))
        start_rng = (torch.get_rng_state(), torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None)

        def run(mode):
            model = copy.deepcopy(base).train()
            opt = AnalogSGD(_param_groups(model, 5e-4), lr=0.005, momentum=0.9, nesterov=True)

            def step(x, y):
                logits = model(x.contiguous())
                return F.cross_entropy(logits, y, label_smoothing=0.1), logits

            update = AnalogGraphedStep(model, step, opt, mode=mode) if mode else (lambda x, y: eager_update(step, opt, x, y))
            torch.set_rng_state(start_rng[0])
            if start_rng[1] is not None:
                torch.cuda.set_rng_state(start_rng[1], dev)
            losses, evals = [], []
            for i, (x, y) in enumerate(batches):
                if i in eval_at:
                    model.eval()
                    with torch.no_grad():
                        evals.append(model(x_eval).clone())
                    model.train()
                if i == halve_at:  # as the plateau schedule at an epoch's end
                    for group in opt.param_groups:
                        group["lr"] = group["lr"] * 0.5
                loss, _ = update(x, y)
                losses.append(loss.detach().clone())
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return model, opt, update, losses, evals

        m_e, o_e, _, loss_e, eval_e = run(None)
        ref = _state(m_e, o_e)
        results["tensors_compared"] = len(ref)
        runs = {"eager": (m_e, o_e)}
        for mode in GRAPH_MODES:
            m_g, o_g, g, loss_g, eval_g = run(mode)
            diffs = _differences(ref, _state(m_g, o_g))
            loss_diff = [i for i, (u, v) in enumerate(zip(loss_e, loss_g)) if not torch.equal(u, v)]
            eval_diff = [i for i, (u, v) in enumerate(zip(eval_e, eval_g)) if not torch.equal(u, v)]
            results[mode] = dict(
                mode_in_force=g.mode, mode_reason=g.mode_reason, captured=g.captured, failure=g.failure,
                replays=g.replays, captures=g.captures, eager_calls=g.eager_calls, steps_with_other_loss=loss_diff,
                evals_differing=eval_diff, tensors_differing=len(diffs), differing=dict(list(diffs.items())[:20]),
                bitwise_equal=g.mode == mode and not diffs and not loss_diff and not eval_diff,
            )
            runs[mode] = (m_g, o_g, g)
            print(json.dumps({mode: results[mode]}, indent=1), flush=True)

        # speed: the same model and batch, each way (no lr change: every call a replay)
        x, y = batches[0]
        for label in ("eager",) + GRAPH_MODES:
            model, opt, *rest = runs[label]
            if label == "eager":
                def one(model=model, opt=opt):
                    logits = model(x.contiguous())
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(logits, y, label_smoothing=0.1).backward()
                    opt.step()
            else:
                def one(update=rest[0]):
                    update(x, y)
            results[f"{label}_step_s"] = timed(one, dev, a.iters)
        for mode in GRAPH_MODES:
            results[f"speedup_{mode}"] = results["eager_step_s"] / results[f"{mode}_step_s"]
        results["epoch_s_at_45k"] = {k: results[f"{k}_step_s"] * (45000 // b) for k in ("eager",) + GRAPH_MODES}
        equal = [m for m in GRAPH_MODES if results[m]["bitwise_equal"]]
        # the mode a run should use: the faster of the modes found bitwise equal (none: eager)
        results["choice"] = min(equal, key=lambda m: results[f"{m}_step_s"]) if equal else "off"
        results["bitwise_equal"] = len(equal) == len(GRAPH_MODES)
    print(json.dumps(results, indent=1))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "hwa_cuda_graph.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0 if results["bitwise_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
