"""The offline demo: shipped ResNet-20 + shipped CIFAR-10 sample, a reduced drift sweep on the CPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .checkpoints import load_pretrained
from .cifar10_sweep import cifar10_sweep
from .data.cifar10 import load_demo_sample, stratified_subset


def run_demo(
    out_dir: Union[str, Path] = "aihwkit-nabn-demo",
    times: Sequence[float] = (1.0, 86400.0, 365 * 86400.0),
    n_chips: int = 2,
    device: Optional[str] = None,
    progress: bool = True,
    test_samples: int = 500,
    calib_samples: int = 256,
) -> dict:
    """Run the demo sweep (digital, analog, gdc, nabn) and print the table; return rows and paths.

    ``test_samples`` and ``calib_samples`` are class-balanced subsets of the shipped sample (1,000 test and
    512 training images); the defaults keep the demo within a few minutes on a 2-core CPU.
    """
    start = time.perf_counter()
    model, meta = load_pretrained("resnet20")
    sample = load_demo_sample()
    test_idx = stratified_subset(sample["test_labels"], min(test_samples, len(sample["test_labels"])), seed=0)
    calib_idx = stratified_subset(sample["calib_labels"], min(calib_samples, len(sample["calib_labels"])), seed=0)
    print(f"ResNet-20 trained on CIFAR-10 (JPEG q75 copy), {meta.get('accuracy', float('nan')):.2f}% on the full test set; "
          f"demo: {len(test_idx)} test images, {len(calib_idx)} training images for calibration, "
          f"{n_chips} chips, PCM noise + drift (aihwkit PCMLikeNoiseModel, GlobalDriftCompensation).")
    out = cifar10_sweep(
        {"resnet20": model}, test_images=sample["test_images"][test_idx], test_labels=sample["test_labels"][test_idx],
        calib_images=sample["calib_images"][calib_idx], out_dir=out_dir, times=times, n_chips=n_chips,
        calib_samples=len(calib_idx), device=device or "cpu", progress=progress,
        title="aihwkit-nabn demo: ResNet-20, CIFAR-10 (JPEG q75 copy) sample",
    )
    print(out["paths"]["summary.md"].read_text())
    print(f"plot: {out['paths']['sweep.png']}; rows: {Path(out_dir) / 'rows.csv'}; "
          f"{time.perf_counter() - start:.0f} s on {device or 'cpu'} with {torch.get_num_threads()} threads")
    return out
