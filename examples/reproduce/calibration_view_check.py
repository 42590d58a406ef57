"""Why calibration uses the training view of the images: digital ResNet-20, BN statistics re-estimated
on 1,024 training images seen plain, as pad-4 random crops + flips, and as the full training view
(crop + flip + Cutout 16, what the shipped models were trained on); top-1 on 2,000 test images.

Usage: python examples/reproduce/calibration_view_check.py [--out results/calibration_view]
"""

import argparse
import json
from pathlib import Path

import torch

import aihwkit_nabn as nb
from aihwkit_nabn.training.checkpoints import load_pretrained
from aihwkit_nabn.tasks.cifar10.data import load_cifar10, normalize, stratified_subset
from aihwkit_nabn.tasks.cifar10.views import augment_like_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/calibration_view")
    parser.add_argument("--model", default="resnet20")
    args = parser.parse_args()
    model, _ = load_pretrained(args.model)
    test_x, test_y = load_cifar10("test", progress=False)
    train_x, train_y = load_cifar10("train", progress=False)
    idx = stratified_subset(test_y, 2000, seed=0)
    metric = nb.Top1Accuracy(nb.TensorBatches(test_x[idx], test_y[idx], batch_size=500, transform=normalize))
    calib = train_x[stratified_subset(train_y, 1024, seed=0)]
    result = {"model": args.model, "test_images": 2000, "calib_images": 1024, "trained_statistics": metric(model)}
    views = (("plain", calib), ("crop + flip", augment_like_training(calib, seed=0, cutout_size=0)),
             ("training view", augment_like_training(calib, seed=0)))
    for view, images in views:
        with nb.noise_aware_bn(model, nb.TensorBatches(images, batch_size=256, transform=normalize), num_samples=None):
            result[f"recalibrated, {view}"] = metric(model)
            result[f"first BN mean variance, {view}"] = float(model.bn1.running_var.mean())
    result["first BN mean variance, trained"] = float(model.bn1.running_var.mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
