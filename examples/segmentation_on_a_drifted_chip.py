"""Noise-aware BN calibration and BN-only fine-tuning of a segmentation network (CamVid) on a drifted chip.

What it does, step by step, with the public API only:

1. Gets a CamVid segmentation network (logits, or torchvision's ``{"out": logits}``): the checkpoint you
   pass with ``--checkpoint``, the shipped ``unet_small`` when the package has it, or else a ``unet_small``
   TRAINED BRIEFLY HERE on a few training images (a toy model; its mIoU is low and only shows the calls).
   The script prints which one it uses.
2. Converts it with ``nb.to_analog`` (``nb.TorchHWAPreset``: PCM noise and drift, global drift compensation,
   input ranges from ``nb.calibrate_input_ranges`` on training images) and programs chip 0, drifted to one
   day and one year (``nb.Chip``).
3. Scores mIoU (``nb.MeanIoU``: 11 classes, void ignored) of the digital model, of the drifted chip with
   global drift compensation, after ``nb.calibrate_bn`` on unlabeled training images (BN statistics pooled
   over the batch and every pixel), and after ``nb.finetune_bn`` (gamma/beta on labeled training images;
   ``forward_fn`` takes the logits out of a dict output), restoring the chip's BN state exactly after each.

    python examples/segmentation_on_a_drifted_chip.py --data ../shared/data/camvid_240x180.tar.gz
    python examples/segmentation_on_a_drifted_chip.py --quick     # a smoke test: tiny model, few images

CamVid is read from ``--data``, ``$AIHWKIT_NABN_CAMVID`` or ``../shared/data/`` (it is never shipped).
"""

import argparse

import torch

import aihwkit_nabn as nb
from aihwkit_nabn.tasks.camvid import VOID, logits_of

TIMES = {"1 day": 86400.0, "1 year": 365 * 86400.0}


def get_model(task, args) -> torch.nn.Module:
    """The network to deploy: ``--checkpoint``, the shipped ``unet_small``, or a toy trained here."""
    if args.checkpoint:
        print(f"model: checkpoint {args.checkpoint}")
        return nb.load_checkpoint(args.checkpoint)[0]
    if not args.quick:
        try:
            model = nb.load_pretrained("unet_small")[0]
            print("model: the shipped unet_small")
            return model
        except nb.CheckpointError:
            pass
    torch.manual_seed(0)
    model = nb.create_model("unet_small", width=4 if args.quick else 16)
    data = task.labeled_data(args.train_samples, batch_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = task.bnft_loss()  # class-weighted cross-entropy on out["out"], void ignored
    model.train()
    for _ in range(args.train_epochs):
        for x, y in data:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    print(f"model: a TOY unet_small trained here for {args.train_epochs} epochs on {args.train_samples} images")
    return model.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="CamVid archive or folder")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--calib-samples", type=int, default=128, help="unlabeled training images for calibrate_bn")
    parser.add_argument("--labeled-samples", type=int, default=64, help="labeled training images for finetune_bn")
    parser.add_argument("--test-samples", type=int, default=0, help="0: all 233 test images")
    parser.add_argument("--train-samples", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=4)
    parser.add_argument("--bnft-steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny model, 8 images each, 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.calib_samples = args.labeled_samples = args.test_samples = args.train_samples = 8
        args.train_epochs, args.bnft_steps = 2, 2
    task = nb.get_task("camvid", args.data)
    digital = get_model(task, args)
    metric = task.test_metric(args.test_samples)  # an nb.MeanIoU over the fixed test subset
    calib = task.calibration_data(args.calib_samples, batch_size=8)
    labeled = task.labeled_data(args.labeled_samples, batch_size=8)
    print(f"digital: {metric(digital):.2f}% mIoU on {metric.samples} test images")

    analog = nb.to_analog(digital, nb.TorchHWAPreset())
    nb.calibrate_input_ranges(analog, calib.head(args.calib_samples, 8), seed=0)
    for when, seconds in TIMES.items():
        chip = nb.Chip(analog, seed=0).drift_to(seconds)
        before = nb.snapshot_bn(chip.model)
        gdc = metric(chip.model)
        with nb.noise_aware_bn(chip.model, calib, num_samples=args.calib_samples):
            nabn = metric(chip.model)
        snap = nb.finetune_bn(chip.model, labeled, steps=args.bnft_steps, lr=1e-3, train="both", calib_data=calib,
                              num_samples=args.calib_samples, forward_fn=lambda model, x: logits_of(model(x)),
                              loss_fn=torch.nn.CrossEntropyLoss(ignore_index=VOID))
        bnft = metric(chip.model)
        snap.restore(chip.model)
        print(f"chip 0, {when:>6} after programming: gdc {gdc:5.2f}%, nabn {nabn:5.2f}% "
              f"({args.calib_samples} unlabeled images), bnft {bnft:5.2f}% ({args.labeled_samples} labeled images); "
              f"BN restored exactly: {nb.snapshot_bn(chip.model).equals(before)}")


if __name__ == "__main__":
    main()
