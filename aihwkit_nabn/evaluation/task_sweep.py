"""The drift sweep of trained models of a task: what ``aihwkit-nabn sweep`` and the demo run.

The models are converted with :func:`~aihwkit_nabn.analog.convert.to_analog` (:class:`PCMInferencePreset`
unless another rpu_config is given), and ``digital``, ``analog``, ``gdc`` and ``nabn`` (any subset) are
evaluated over drift time on independent chips with the task's test metric; ``nabn`` calibrates on the
task's unlabeled training images in the training view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..analog.convert import to_analog
from ..analog.presets import config_fields
from ..analog.times import DEFAULT_TIMES
from ..errors import ConfigError
from ..utils.checks import check_int
from ..utils.devices import resolve_device
from .methods import MethodData, build_methods
from .report import write_report
from .sweep import SweepModel, run_sweep
from .task import Task

__all__ = ["sweep_task", "SWEEP_METHODS"]

#: The methods of ``aihwkit-nabn sweep`` (the comparison adds BN fine-tuning and HWA).
SWEEP_METHODS = ("digital", "analog", "gdc", "nabn")


def sweep_task(
    task: Task,
    models: Mapping[str, nn.Module],
    *,
    out_dir: Union[str, Path],
    times: Sequence[float] = DEFAULT_TIMES,
    n_chips: int = 5,
    methods: Sequence[str] = SWEEP_METHODS,
    test_samples: int = 0,
    calib_samples: int = 1024,
    rpu_config: Optional[Any] = None,
    digital_layers: Sequence[str] = (),
    device: Optional[Union[str, torch.device]] = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
    title: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    ray: Optional[Any] = None,
) -> Dict[str, Any]:
    """Run the drift sweep of ``models`` (digital, trained on ``task``) and write every output file.

    ``test_samples`` (0: all) and ``calib_samples`` are fixed stratified subsets of the task's test and
    training splits (seeded by ``seed``); the calibration images are seen in the task's training view.
    Both are batched on ``device`` (evaluation batches of ``batch_size``, calibration batches of at most
    256). Returns ``{"rows": [...], "paths": {file name: path}}``.
    """
    unknown = [m for m in methods if m not in SWEEP_METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; `sweep` runs {list(SWEEP_METHODS)} "
                          "(the full comparison: `aihwkit-nabn reproduce`)")
    check_int("n_chips", n_chips, 1)
    check_int("calib_samples", calib_samples, 2)
    task.check_sizes(test=test_samples, train=calib_samples)
    device = resolve_device(device)
    metric = task.test_metric(test_samples, seed=seed, batch_size=batch_size, device=device)
    calib = task.calibration_data(calib_samples, seed=seed, batch_size=min(batch_size, 256), device=device,
                                  balanced=False)
    sweep_models = {
        name: SweepModel(model, {"default": to_analog(model, rpu_config, digital_layers=digital_layers)})
        for name, model in models.items()
    }
    settings = {
        "test_samples": getattr(metric, "samples", None), "calib_samples": calib_samples, "calib_split": "train",
        "calib_view": task.calib_view, "digital_layers": list(digital_layers),
        # field by field (repr would hold object addresses of some noise models, and a resume would refuse)
        "rpu_config": config_fields(rpu_config) if rpu_config is not None else "PCMInferencePreset()",
        **(dict(config) if config else {}),
    }
    rows = run_sweep(
        sweep_models, build_methods(methods, MethodData(calib=calib, calib_samples=calib_samples,
                                                        calibrate_kwargs=task.calibrate_kwargs())), metric,
        out_dir=out_dir, times=times, n_chips=n_chips, seed=seed, device=device, progress=progress, config=settings,
        ray=ray,
    )
    paths = write_report(rows, out_dir, title=title or task.title)
    return {"rows": rows, "paths": paths}
