"""The offline demo: shipped ResNet-20 + shipped CIFAR-10 sample, a reduced drift sweep on the CPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ...evaluation.task_sweep import sweep_task
from ...training.checkpoints import load_pretrained
from .task import SHIPPED_SAMPLE, Cifar10Task

__all__ = ["run_demo"]


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

    ``test_samples`` (at most 1,000) and ``calib_samples`` (at most 512) are class-balanced subsets of the
    shipped sample; the defaults keep the demo within a few minutes on a 2-core CPU.
    """
    start = time.perf_counter()
    task = Cifar10Task(SHIPPED_SAMPLE)
    task.check_sizes(test=test_samples, train=calib_samples)
    model, meta = load_pretrained("resnet20")
    print(f"ResNet-20 trained on CIFAR-10 (JPEG q75 copy), {meta.get('accuracy', float('nan')):.2f}% on the full test set; "
          f"demo: {test_samples} test images, {calib_samples} training images for calibration, "
          f"{n_chips} chips, PCM noise + drift (aihwkit PCMLikeNoiseModel, GlobalDriftCompensation).")
    out = sweep_task(
        task, {"resnet20": model}, out_dir=out_dir, times=times, n_chips=n_chips, test_samples=test_samples,
        calib_samples=calib_samples, device=device or "cpu", progress=progress,
        title="aihwkit-nabn demo: ResNet-20, CIFAR-10 (JPEG q75 copy) sample",
    )
    print(out["paths"]["summary.md"].read_text())
    print(f"plot: {out['paths']['sweep.png']}; rows: {Path(out_dir) / 'rows.csv'}; "
          f"{time.perf_counter() - start:.0f} s on {device or 'cpu'} with {torch.get_num_threads()} threads")
    return out
