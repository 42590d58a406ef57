"""A few CamVid test images with ground truth and the digital, gdc (1 y) and nabn (1 y) predictions.

Usage: python examples/reproduce/camvid_figure.py [--model unet_small] [--images 4] [--out results/camvid/predictions.png]

The model is deployed as in the comparison (TorchHWAPreset, calibrated input ranges, chip seed 0), drifted to
one year; ``nabn`` calibrates on the comparison's unlabeled training images (its config). The figure shows
images of the test split at small size, which the data's licence allows for result figures.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.input_ranges import calibrate_input_ranges
from aihwkit_nabn.tasks.camvid import COLOURS, VOID, logits_of, normalize
from aihwkit_nabn.utils.devices import resolve_device

ONE_YEAR = 365 * 86400.0


def colour(labels: torch.Tensor) -> np.ndarray:
    """CamVid colours of a label map ``[H, W]`` (void black)."""
    return np.asarray(COLOURS, dtype=np.uint8)[labels.clamp(0, VOID).cpu().numpy()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="unet_small", help="registry name (shipped checkpoint) or a checkpoint path")
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="results/camvid/predictions.png")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    task = nb.get_task("camvid", args.data)
    _, digital, _ = task.load_model(args.model)
    digital = digital.to(device).eval()
    images, labels = task.split("test")
    pick = torch.linspace(0, len(images) - 1, args.images).round().long()
    x = normalize(images[pick].to(device))
    calib = task.calibration_data(args.calib_samples, seed=0, device=device)
    analog = nb.to_analog(digital, nb.TorchHWAPreset()).to(device)
    calibrate_input_ranges(analog, calib.head(args.calib_samples, 16), seed=0, device=device)
    chip = nb.Chip(analog, seed=0, device=device).drift_to(ONE_YEAR)
    with torch.no_grad():
        rows = {"digital": logits_of(digital(x)).argmax(1)}
        torch.manual_seed(0)
        rows["gdc, 1 year"] = logits_of(chip.model(x)).argmax(1)
        undo = nb.calibrate_bn(chip.model, calib, num_samples=args.calib_samples)
        torch.manual_seed(0)
        rows["nabn, 1 year"] = logits_of(chip.model(x)).argmax(1)
        undo.restore(chip.model)
    columns = ["image", "ground truth", *rows]
    fig = Figure(figsize=(2.4 * len(columns), 1.9 * len(pick)))
    axes = fig.subplots(len(pick), len(columns), squeeze=False)
    for i, index in enumerate(pick.tolist()):
        panels = [images[index].permute(1, 2, 0).numpy(), colour(labels[index])] + [colour(p[i]) for p in rows.values()]
        for j, panel in enumerate(panels):
            axes[i][j].imshow(panel)
            axes[i][j].set_axis_off()
            if i == 0:
                axes[0][j].set_title(columns[j], fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
