"""How much of a model's analog compute BatchNorm calibration can reach: the share of convolution/linear MACs whose
output a BatchNorm layer normalises directly (its running statistics are what ``calibrate_bn`` re-estimates).

A layer counts as covered when the tensor it returns is the very input of a BatchNorm call in the same forward
pass (conv -> BN, as in ResNet blocks); layers feeding ReLU, addition, GroupNorm (the FCOS head) or nothing (FPN
convolutions, logits) are not. MACs are counted on one forward pass at the task's input size.

Usage: python examples/reproduce/bn_coverage.py --out results/bn_coverage.json
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import aihwkit_nabn as nb
from aihwkit_nabn.utils.provenance import code_commit

# (task, model, a checkpoint if committed, input): the models of the committed comparisons
MODELS = (
    ("cifar10", "resnet32", None, (3, 32, 32)),
    ("camvid", "unet_small", "results/camvid/checkpoints/unet_small.pt", (3, 176, 224)),
    ("pennfudan", "fcos_small", "results/pennfudan/checkpoints/fcos_small.pt", (3, 384, 512)),
)


def coverage(model: nn.Module, x) -> dict:
    """Per-layer MACs and whether a BatchNorm normalises the layer's output; totals and the covered share."""
    outputs, layers, hooks = {}, {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            def after(m, inp, out, name=name):
                if isinstance(m, nn.Conv2d):
                    macs = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
                else:
                    macs = out.numel() * m.in_features
                rec = layers.setdefault(name, {"macs": 0, "normalised_by": None})
                rec["macs"] += int(macs)
                outputs[id(out)] = name
            hooks.append(mod.register_forward_hook(after))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
            def before(m, inp, name=name):
                src = outputs.get(id(inp[0]))
                if src is not None:
                    layers[src]["normalised_by"] = name
            hooks.append(mod.register_forward_pre_hook(before))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    total = sum(r["macs"] for r in layers.values())
    covered = sum(r["macs"] for r in layers.values() if r["normalised_by"])
    return {"layers": len(layers), "layers_normalised": sum(1 for r in layers.values() if r["normalised_by"]),
            "macs": total, "macs_normalised": covered, "share_normalised": covered / total, "per_layer": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = {"commit": code_commit(), "models": {}}
    for task, name, ckpt, shape in MODELS:
        model = (nb.load_checkpoint(ckpt)[0] if ckpt and Path(ckpt).exists() else nb.create_model(name)).eval()
        x = [torch.rand(*shape)] if task == "pennfudan" else torch.rand(1, *shape)
        rec = coverage(model, x)
        out["models"][name] = {"task": task, "input": "x".join(map(str, shape[1:])), **rec}
        print(f"{task:9s} {name:11s} {rec['layers_normalised']:2d}/{rec['layers']:2d} layers, "
              f"{100 * rec['share_normalised']:.1f} % of {rec['macs'] / 1e9:.2f} GMACs normalised by a BatchNorm")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
