"""The CIFAR-10 drift sweep behind ``aihwkit-nabn sweep`` and ``aihwkit-nabn demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .batches import TensorBatches
from .checkpoints import load_checkpoint, load_pretrained
from .data.cifar10 import normalize
from .deploy import to_analog
from .methods import AnalogUncompensated, Digital, GlobalDriftCompensated, Method, NoiseAwareBN
from .metrics import Top1Accuracy
from .models import list_models
from .report import write_report
from .sweep import DEFAULT_TIMES, SweepModel, run_sweep
from .training import augment_like_training

METHOD_NAMES = ("digital", "analog", "gdc", "nabn")


def load_classifier(spec: str) -> "tuple[str, nn.Module, Dict[str, Any]]":
    """Return ``(name, model, meta)`` for a checkpoint path, or a registry name with shipped weights."""
    path = Path(spec)
    if path.is_file():
        model, meta = load_checkpoint(path)
        return meta.get("arch", path.stem), model, meta
    if spec in list_models():
        model, meta = load_pretrained(spec)
        return spec, model, meta
    raise FileNotFoundError(f"{spec!r} is neither a checkpoint file nor one of the models {list_models()}")


def build_methods(names: Sequence[str], calib_batches: TensorBatches, calib_samples: int) -> List[Method]:
    """Return the methods named in ``names`` (a subset of :data:`METHOD_NAMES`), in that order."""
    factory = {
        "digital": Digital,
        "analog": AnalogUncompensated,
        "gdc": GlobalDriftCompensated,
        "nabn": lambda: NoiseAwareBN(calib_batches, num_samples=calib_samples),
    }
    unknown = [n for n in names if n not in factory]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(factory)}")
    return [factory[n]() for n in names]


def cifar10_sweep(
    models: Mapping[str, nn.Module],
    *,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    calib_images: torch.Tensor,
    out_dir: Union[str, Path],
    times: Sequence[float] = DEFAULT_TIMES,
    n_chips: int = 5,
    methods: Sequence[str] = METHOD_NAMES,
    calib_samples: int = 1024,
    rpu_config: Optional[Any] = None,
    digital_layers: Sequence[str] = (),
    device: Optional[Union[str, torch.device]] = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
    title: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    calib_augment: bool = True,
) -> Dict[str, Any]:
    """Run the drift sweep of CIFAR-10 classifiers and write every output file; return rows and paths.

    ``calib_images`` (uint8, from the training split) feed ``calibrate_bn``, as one fixed training-style
    view of each (:func:`~aihwkit_nabn.training.augment_like_training`, unless ``calib_augment=False``);
    ``test_images`` (uint8) are the evaluation set. Both are normalised batch by batch on ``device``.
    """
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if calib_samples > len(calib_images):
        raise ValueError(f"calib_samples={calib_samples} but only {len(calib_images)} calibration images were given")
    test_batches = TensorBatches(test_images, test_labels, batch_size=batch_size, transform=normalize, device=device)
    calib_images = calib_images[:calib_samples]
    if calib_augment:
        calib_images = augment_like_training(calib_images, seed=seed)
    calib_batches = TensorBatches(calib_images, batch_size=min(batch_size, 256), transform=normalize, device=device)
    sweep_models = {
        name: SweepModel(model, {"default": to_analog(model, rpu_config, digital_layers=digital_layers)})
        for name, model in models.items()
    }
    settings = {
        "test_samples": len(test_images), "calib_samples": calib_samples, "calib_split": "train",
        "calib_view": "training augmentation (pad-4 random crop + flip + cutout 16), seeded" if calib_augment else "plain",
        "digital_layers": list(digital_layers), "rpu_config": repr(rpu_config) if rpu_config is not None else "PCMInferencePreset()",
        **(dict(config) if config else {}),
    }
    rows = run_sweep(
        sweep_models, build_methods(methods, calib_batches, calib_samples), Top1Accuracy(test_batches),
        out_dir=out_dir, times=times, n_chips=n_chips, seed=seed, device=device, progress=progress, config=settings,
    )
    paths = write_report(rows, out_dir, title=title)
    return {"rows": rows, "paths": paths}
