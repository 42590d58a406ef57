"""Why BN fine-tuning does not beat calibration alone in the comparison: a small lr/optimizer check.

ResNet-32 on the comparison's hardware (TorchHWAPreset, calibrated input ranges), one chip, one year
after programming, a balanced subset of 1,000 test images; after the same calibrate_bn as `nabn`,
gamma/beta are fine-tuned for 40 steps on batches of 32 of the 1,024 labeled training images with
several optimizers. Writes results/bnft_check/result.json.

Usage: python examples/reproduce/bnft_lr_check.py [--out results/bnft_check]
"""

import argparse
import json
from pathlib import Path

import torch

from aihwkit_nabn import Chip, finetune_bn, get_task
from aihwkit_nabn.evaluation.comparison import Comparison, load_config

VARIANTS = {
    "adam lr 1e-3 (comparison default)": {"optimizer": "adam", "lr": 1e-3},
    "adam lr 1e-4": {"optimizer": "adam", "lr": 1e-4},
    "sgd lr 1e-2": {"optimizer": "sgd", "lr": 1e-2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/bnft_check")
    args = parser.parse_args()
    torch.set_num_threads(2)
    task = get_task("cifar10")
    config = load_config(task.default_config, {"data.test_samples": 1000, "data.batch_size": 250,
                                               "bnft.batch_size": 32, "device": "cpu"})
    cmp = Comparison(task, config, base=Path.cwd(), device="cpu", progress=False)
    spec = cmp.model("resnet32", needs_hwa=False)
    chip = Chip(spec.analog["default"], seed=0)
    chip.drift_to(365 * 86400.0)
    result = {"model": "resnet32", "chip_seed": 0, "time": "1y", "test_images": cmp.n_test, "steps": 40}
    torch.manual_seed(0)
    result["gdc"] = cmp.metric(chip.model)
    for name, kwargs in VARIANTS.items():
        torch.manual_seed(0)
        snapshot = finetune_bn(chip.model, cmp.labeled, train="both", calib_data=cmp.calib, num_samples=cmp.calib_samples,
                               steps=40, **kwargs)
        torch.manual_seed(0)
        result[f"bnft, {name}"] = cmp.metric(chip.model)
        result[f"bnft, {name}, train loss first/last"] = [snapshot.info["initial_loss"], snapshot.info["final_loss"]]
        snapshot.restore(chip.model)
    torch.manual_seed(0)
    snapshot = finetune_bn(chip.model, cmp.labeled, train="stats", calib_data=cmp.calib, num_samples=cmp.calib_samples)
    torch.manual_seed(0)
    result["nabn (calibration only)"] = cmp.metric(chip.model)
    snapshot.restore(chip.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
