"""A few Penn-Fudan test images with ground-truth boxes and the digital, gdc (1 y) and nabn (1 y) detections.

Usage: python examples/reproduce/pennfudan_figure.py [--model fcos_small] [--images 4]
       [--score 0.5] [--out results/pennfudan/detections.png]

The detector is deployed as in the comparison (TorchHWAPreset, calibrated input ranges, chip seed 0), drifted
to one year; ``nabn`` calibrates on the comparison's unlabeled training images (its config's 64). Detections
with a score below ``--score`` are not drawn. The figure shows test images at small size, which the data's
authors allow for result figures.
"""

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.input_ranges import calibrate_input_ranges
from aihwkit_nabn.tasks.pennfudan import normalize
from aihwkit_nabn.utils.devices import resolve_device

ONE_YEAR = 365 * 86400.0


def draw(ax, image: torch.Tensor, boxes: torch.Tensor, colour: str) -> None:
    """Show ``image`` (uint8 ``[3, H, W]``) with ``boxes`` (``[N, 4]`` x0, y0, x1, y1) outlined."""
    ax.imshow(image.permute(1, 2, 0).numpy())
    for x0, y0, x1, y1 in boxes.tolist():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
    ax.set_axis_off()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="fcos_small", help="registry name (shipped checkpoint) or a path")
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--score", type=float, default=0.5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="results/pennfudan/detections.png")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    task = nb.get_task("pennfudan", args.data)
    _, digital, _ = task.load_model(args.model)
    digital = digital.to(device).eval()
    images, boxes = task.split("test")
    pick = torch.linspace(0, len(images) - 1, args.images).round().long().tolist()
    x = [normalize(images[i].to(device)) for i in pick]
    calib = task.calibration_data(args.calib_samples, seed=0, device=device)
    analog = nb.to_analog(digital, nb.TorchHWAPreset()).to(device)
    calibrate_input_ranges(analog, task.input_range_batches(calib, 32), seed=0, device=device)
    chip = nb.Chip(analog, seed=0, device=device).drift_to(ONE_YEAR)

    def found(model) -> list:
        torch.manual_seed(0)
        return [(o["boxes"][o["scores"] >= args.score]).cpu() for o in model(x)]

    with torch.no_grad():
        rows = {"digital": found(digital), "gdc, 1 year": found(chip.model)}
        undo = nb.calibrate_bn(chip.model, calib, num_samples=args.calib_samples, **task.calibrate_kwargs())
        rows["nabn, 1 year"] = found(chip.model)
        undo.restore(chip.model)
    columns = {"ground truth": [boxes[i] for i in pick], **rows}
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * len(pick)))
    axes = fig.subplots(len(pick), len(columns), squeeze=False)
    for j, (title, per_image) in enumerate(columns.items()):
        for i, index in enumerate(pick):
            draw(axes[i][j], images[index], per_image[i], "lime" if j == 0 else "red")
        axes[0][j].set_title(f"{title} (score >= {args.score:g})" if j else title, fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
