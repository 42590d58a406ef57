"""Noise-aware BN calibration and BN-only fine-tuning of a pedestrian detector (Penn-Fudan) on a drifted chip.

What it does, step by step, with the public API only:

1. Gets a torchvision FCOS detector (``fcos_small``: ResNet-18 stages 1-3 with BatchNorm, a 64-channel FPN):
   the checkpoint you pass with ``--checkpoint``, the shipped one when the package has it, or else an UNTRAINED one
   (its AP is about 0 and only shows the calls). The script prints which one it uses.
2. Converts every convolution of backbone, FPN and head with ``nb.to_analog`` (``nb.TorchHWAPreset``, input
   ranges from ``nb.calibrate_input_ranges``) and programs chip 0, drifted to one day and one year.
3. Scores box AP50 and mAP (``nb.DetectionAP``: torchmetrics / pycocotools) of the digital detector, of the
   drifted chip, after ``nb.calibrate_bn`` and after ``nb.finetune_bn``, restoring BN exactly after each.
   A detector's batch is a list of images: ``input_fn=images_of`` picks them out of a batch; calibration
   runs the detector's inference call (only BN layers collect, no targets needed). Fine-tuning minimises the
   detector's own losses: ``detection_batch_of`` keeps images and targets together as the input,
   ``detector_losses`` (the ``forward_fn``) calls the detector with only its top module in training mode
   (tiles and BN stay deployed) and gets the dict of losses, ``sum_of_losses`` adds them.

    python examples/detection_on_a_drifted_chip.py --data ../shared/data/pennfudan.tar.gz
    python examples/detection_on_a_drifted_chip.py --quick    # a smoke test: small images, few of them

Penn-Fudan is read from ``--data``, ``$AIHWKIT_NABN_PENNFUDAN`` or ``../shared/data/`` (never shipped).
"""

import argparse

import torch

import aihwkit_nabn as nb
from aihwkit_nabn.tasks.pennfudan import detection_batch_of, detector_losses, images_of, sum_of_losses, targets_of

TIMES = {"1 day": 86400.0, "1 year": 365 * 86400.0}


def get_model(args) -> torch.nn.Module:
    """The detector to deploy: ``--checkpoint``, the shipped ``fcos_small``, or an untrained one."""
    if args.checkpoint:
        print(f"model: checkpoint {args.checkpoint}")
        return nb.load_checkpoint(args.checkpoint)[0].eval()
    if not args.quick:
        try:
            model = nb.load_pretrained("fcos_small")[0]
            print("model: the shipped fcos_small")
            return model.eval()
        except nb.CheckpointError:
            pass
    torch.manual_seed(0)
    sizes = {"min_size": 96, "max_size": 128} if args.quick else {}
    print("model: an UNTRAINED fcos_small (pass --checkpoint for a trained one)")
    return nb.create_model("fcos_small", **sizes).eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="Penn-Fudan archive or folder")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--calib-samples", type=int, default=64, help="unlabeled training images for calibrate_bn")
    parser.add_argument("--labeled-samples", type=int, default=64, help="labeled training images for finetune_bn")
    parser.add_argument("--test-samples", type=int, default=0, help="0: all 50 test images")
    parser.add_argument("--bnft-steps", type=int, default=40)
    # BN fine-tuning back-propagates through every analog layer's patch matrix: at batch 4 and shorter side 512
    # that holds about 9.5 GB on the GPU (peak_mem_mib of the bnft rows, results/pennfudan/); a CPU run was killed
    # for memory at 18.4 GB resident (23 GB machine, other jobs beside it)
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per calibration / fine-tuning batch (default 4, as reproduce pennfudan; "
                             "2: roughly half the fine-tuning memory)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 images each, 1 step")
    args = parser.parse_args(argv)
    if args.quick:
        args.calib_samples = args.labeled_samples = args.test_samples = 4
        args.bnft_steps = 1
    task = nb.get_task("pennfudan", args.data)
    digital = get_model(args)
    metric = task.test_metric(args.test_samples)  # an nb.DetectionAP over the fixed test subset
    calib = task.calibration_data(args.calib_samples, batch_size=args.batch_size)  # lists of images
    labeled = task.labeled_data(args.labeled_samples, batch_size=args.batch_size)  # (images, targets) pairs
    ap = metric(digital)
    print(f"digital: AP50 {ap['ap50']:.2f}%, mAP {ap['map']:.2f}% on {metric.samples} test images")

    analog = nb.to_analog(digital, nb.TorchHWAPreset())
    nb.calibrate_input_ranges(analog, task.input_range_batches(calib, args.calib_samples), seed=0)
    for when, seconds in TIMES.items():
        chip = nb.Chip(analog, seed=0).drift_to(seconds)
        before = nb.snapshot_bn(chip.model)
        gdc = metric(chip.model)["ap50"]
        with nb.noise_aware_bn(chip.model, calib, num_samples=args.calib_samples, input_fn=images_of):
            nabn = metric(chip.model)["ap50"]
        snap = nb.finetune_bn(chip.model, labeled, steps=args.bnft_steps, lr=1e-3, train="affine",
                              input_fn=detection_batch_of, target_fn=targets_of, forward_fn=detector_losses,
                              loss_fn=sum_of_losses)
        bnft = metric(chip.model)["ap50"]
        snap.restore(chip.model)
        print(f"chip 0, {when:>6} after programming: AP50 gdc {gdc:5.2f}%, nabn {nabn:5.2f}% "
              f"({args.calib_samples} unlabeled images), bnft {bnft:5.2f}% ({args.labeled_samples} labeled images); "
              f"BN restored exactly: {nb.snapshot_bn(chip.model).equals(before)}")


if __name__ == "__main__":
    main()
