"""What an unshuffled, class-sorted calibration loader costs, and that calibrate_bn warns about it.

The shipped ResNet-20 on 2 simulated PCM chips one year after programming (the demo's hardware), the
1,000 test images of the shipped CIFAR-10 (JPEG q75 copy) sample; calibrate_bn on 256 of the sample's 512
training images, either the first 256 of the class-sorted sample (an unshuffled loader: classes 0-4 only)
or a class-balanced 256 (stratified_subset), both in the training view, as labeled ``(x, y)`` batches.
Writes results/class_sorted_calibration/result.json (commit, per-chip accuracies, the warning text).

Usage: python examples/reproduce/class_sorted_calibration_check.py [--out results/class_sorted_calibration]
"""

import argparse
import json
import subprocess
import warnings
from pathlib import Path

import torch

import aihwkit_nabn as nb
from aihwkit_nabn.tasks.cifar10 import augment_like_training, load_demo_sample, normalize, stratified_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/class_sorted_calibration")
    parser.add_argument("--chips", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    sample = load_demo_sample()
    model, _ = nb.load_pretrained("resnet20")
    metric = nb.Top1Accuracy(nb.TensorBatches(sample["test_images"], sample["test_labels"], batch_size=500,
                                              transform=normalize))
    images, labels = sample["calib_images"], sample["calib_labels"]  # sorted by class, like the archive
    subsets = {"first 256 of the class-sorted sample": torch.arange(256),
               "class-balanced 256 (stratified_subset)": stratified_subset(labels, 256, seed=0)}
    result = {"model": "resnet20 (shipped)", "time": "1y", "test_images": len(sample["test_labels"]),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "hardware": "PCMInferencePreset (the demo's)", "per_chip": {}, "classes": {}, "warning": {}}
    for name, idx in subsets.items():
        result["classes"][name] = sorted(set(labels[idx].tolist()))
    for chip in nb.make_chips(nb.to_analog(model), n=args.chips, seed=0):
        chip.drift_to(365 * 86400.0)
        for name, idx in subsets.items():
            view = augment_like_training(images[idx], seed=0)
            batches = nb.TensorBatches(view, labels[idx], batch_size=64, transform=normalize)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                snapshot = nb.calibrate_bn(chip.model, batches, num_samples=256)
            result["warning"][name] = [str(w.message) for w in caught if issubclass(w.category, nb.CalibrationDataWarning)]
            torch.manual_seed(chip.seed)
            result["per_chip"].setdefault(name, []).append(metric(chip.model))
            snapshot.restore(chip.model)
    result["mean"] = {name: sum(v) / len(v) for name, v in result["per_chip"].items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
