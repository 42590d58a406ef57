"""Size and FLOPs of the registered models of a task at its input resolution (torch's FlopCounterMode).

Usage: python examples/reproduce/model_size.py camvid 180x240 [--out results/camvid/model_size.json]
       python examples/reproduce/model_size.py pennfudan 384x512 --out results/pennfudan/model_size.json
"""

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import aihwkit_nabn as nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("size", help="HxW of one input image")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    out = {}
    for name in nb.get_task(args.task).model_names():
        model = nb.create_model(name).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, h, w))
        convs = sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        out[name] = {"parameters": sum(p.numel() for p in model.parameters()), "gflops_per_image": counter.get_total_flops() / 1e9,
                     "conv_and_linear_layers": convs, "input": f"{h}x{w}"}
        transform = getattr(model, "transform", None)
        if transform is not None:  # torchvision's detectors resize every image first (eval: the last min_size)
            out[name]["resized_by_the_detector_to_shorter_side"] = int(transform.min_size[-1])
        print(name, out[name])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
