"""Penn-Fudan pedestrian detection as a :class:`~aihwkit_nabn.evaluation.task.Task`: data, box AP, views, recipes.

Detectors take lists of images and, in training mode, return their losses. Calibration therefore runs the
model in inference mode (no targets needed; only BatchNorm layers collect, as ``calibrate_bn`` always
does) on batches that are lists of images (``input_fn=images_of``), and BN fine-tuning runs the detector's
own losses: :func:`detector_losses` switches only the detector's top module to training mode for the call
(its backbone, BatchNorm layers and analog tiles stay in eval), on :class:`DetectionBatch` inputs that carry
the images and their targets together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...evaluation.metrics import DetectionAP
from ...evaluation.task import Option, PathLike, Task, check_eval_split, float_option, int_option
from .data import load_pennfudan, normalize
from .recipe import DATASET_NAME, train_detector, train_hwa_pennfudan
from .views import fixed_views

__all__ = ["PennFudanTask", "DetectionBatch", "images_of", "detection_batch_of", "detector_losses", "sum_of_losses"]


class DetectionBatch:
    """Images and their targets as one model input, with ``len`` and slicing (what ``finetune_bn`` needs)."""

    def __init__(self, images: Sequence[Tensor], targets: Sequence[Dict[str, Tensor]]):
        self.images, self.targets = list(images), list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice) -> "DetectionBatch":
        return DetectionBatch(self.images[index], self.targets[index])


def images_of(batch: Any) -> List[Tensor]:
    """The images of a calibration batch (a list of images) or of an ``(images, targets)`` batch."""
    return list(batch[0]) if isinstance(batch, tuple) else list(batch)


def detection_batch_of(batch: Tuple[Sequence[Tensor], Sequence[dict]]) -> DetectionBatch:
    """An ``(images, targets)`` batch as one :class:`DetectionBatch` input."""
    return DetectionBatch(*batch)


def targets_of(batch: Tuple[Sequence[Tensor], Sequence[dict]]) -> List[dict]:
    """The targets of an ``(images, targets)`` batch (the losses use them inside the forward)."""
    return list(batch[1])


def detector_losses(model: nn.Module, batch: DetectionBatch) -> Dict[str, Tensor]:
    """The detector's own losses on ``batch``: only the top module in training mode for the call.

    torchvision's detectors decide on ``self.training`` of the top module whether to return losses; every
    submodule (backbone, BatchNorm, analog tiles) keeps its mode, so the chip runs as deployed.
    """
    was = model.training
    model.training = True
    try:
        return model(batch.images, batch.targets)
    finally:
        model.training = was


def detections(model: nn.Module, images: Sequence[Tensor]) -> Any:
    """The detector's inference call on a list of images (its boxes; what BN calibration runs)."""
    return model(images)


def sum_of_losses(losses: Dict[str, Tensor], _targets: Any = None) -> Tensor:
    """The sum of a detector's losses (classification, box regression, centre-ness)."""
    return sum(losses.values())


class PennFudanTask(Task):
    """Penn-Fudan pedestrians: 100 train / 20 val / 50 test images (seeded split), box AP50 and mAP."""

    name = "pennfudan"
    title = DATASET_NAME
    metric_name = "ap50"
    default_config = Path(__file__).resolve().with_name("config.toml")
    calib_view = "training augmentation (random box-keeping crop 70-100 %, flip), seeded; detector's own resize"
    train_options = (
        Option("batch_size", int_option(1), "images per step (default 4)"),
        Option("lr", float_option(positive=True), "peak learning rate of SGD (default 0.01)"),
        Option("weight_decay", float_option(minimum=0.0), "SGD weight decay (default 1e-4)"),
        Option("min_size", int_option(16), "one shorter side for the detector's resize instead of the default "
                                           "384-512 jitter (training) / 512 (evaluation); kept in the checkpoint"),
        Option("max_size", int_option(16), "the longest side after the detector's resize (default 800)"),
    )
    hwa_options = (
        Option("batch_size", int_option(1), "images per step (default 4)"),
        Option("lr", float_option(positive=True), "peak learning rate of AnalogSGD (default 0.005)"),
    )

    def __init__(self, source: Optional[PathLike] = None):
        super().__init__(source)
        self._splits: Dict[str, Tuple[List[Tensor], List[Tensor]]] = {}

    def split(self, name: str) -> Tuple[List[Tensor], List[Tensor]]:
        """Return ``(uint8 images, boxes)`` of a split (read once)."""
        if name not in self._splits:
            images, boxes, _ = load_pennfudan(name, self.source)
            self._splits[name] = (images, boxes)
        return self._splits[name]

    def model_inputs(self, split: str, samples: int, device: Any = None) -> List[Tensor]:
        return [normalize(image).to(device) for image in self.split(split)[0][:samples]]

    def sizes(self) -> Dict[str, int]:
        return {"train": 100, "val": 20, "test": 50} if self.source is None else {}

    @staticmethod
    def _batches(images: Sequence[Tensor], boxes: Optional[Sequence[Tensor]], batch_size: int,
                 device: Optional[torch.device]) -> List[Any]:
        out = []
        for start in range(0, len(images), batch_size):
            x = [normalize(img.to(device) if device is not None else img) for img in images[start:start + batch_size]]
            if boxes is None:
                out.append(x)
                continue
            y = [{"boxes": b.to(device) if device is not None else b, "labels": torch.ones(len(b), dtype=torch.int64,
                                                                                           device=device)}
                 for b in boxes[start:start + batch_size]]
            out.append((x, y))
        return out

    def _subset(self, n: int, total: int, seed: int) -> List[int]:
        if n <= 0 or n >= total:
            return list(range(total))
        return sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].tolist())

    def test_metric(self, samples: int = 0, *, seed: int = 0, batch_size: int = 4,
                    device: Optional[torch.device] = None, split: str = "test") -> DetectionAP:
        images, boxes = self.split(check_eval_split(split))
        idx = self._subset(samples, len(images), seed)
        data = self._batches([images[i] for i in idx], [boxes[i] for i in idx], batch_size, device)
        return DetectionAP(data, samples=len(idx))

    def _views(self, samples: int, seed: int) -> Tuple[List[Tensor], List[Tensor]]:
        images, boxes = self.split("train")
        if samples > len(images):
            raise ConfigError(f"{samples} training images requested but the Penn-Fudan train split has {len(images)}")
        idx = self._subset(samples, len(images), seed)
        return fixed_views([images[i] for i in idx], [boxes[i] for i in idx], seed)

    def calibration_data(self, samples: int, *, seed: int = 0, batch_size: int = 4,
                         device: Optional[torch.device] = None, balanced: bool = True) -> List[List[Tensor]]:
        images, _ = self._views(samples, seed)
        return self._batches(images, None, batch_size, device)

    def labeled_data(self, samples: int, *, seed: int = 1, batch_size: int = 4,
                     device: Optional[torch.device] = None) -> List[Any]:
        images, boxes = self._views(samples, seed)
        return self._batches(images, boxes, batch_size, device)

    def input_range_batches(self, calib: List[List[Tensor]], samples: int,
                            batch_size: Optional[int] = None) -> List[List[Tensor]]:
        # A detector's input is a list of images: keep whole calibration batches until ``samples`` images, or
        # regroup those images in lists of ``batch_size``.
        out, seen = [], 0
        for images in calib:
            if seen >= samples:
                break
            out.append(images[:samples - seen])
            seen += len(out[-1])
        if batch_size:
            flat = [image for images in out for image in images]
            out = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
        return out

    def bnft_loss(self):
        return sum_of_losses

    def calibrate_kwargs(self) -> Dict[str, Any]:
        return {"input_fn": images_of}

    def finetune_kwargs(self) -> Dict[str, Any]:
        return {"input_fn": detection_batch_of, "target_fn": targets_of, "forward_fn": detector_losses,
                "calib_input_fn": images_of, "calib_forward_fn": detections}

    def train(self, *, arch: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
              progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        sizes = {k: options.pop(k) for k in ("min_size", "max_size") if options.get(k) is not None}
        result = train_detector(arch, epochs=epochs, out_path=out, data_source=self.source, seed=seed, device=device,
                                progress=progress, command=command, model_kwargs=sizes, **options)
        meta = result["meta"] or {}
        return {"arch": arch, "val_ap50": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "test_ap50": meta.get("test_ap50"), "test_map": meta.get("test_map"),
                "epochs_done": result["epochs_done"], "finished": result["finished"]}

    def train_hwa(self, *, model: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
                  progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        result = train_hwa_pennfudan(model, epochs=epochs, out_path=out, data_source=self.source, seed=seed,
                                     device=device, progress=progress, command=command or None, **options)
        meta = result["meta"] or {}
        return {"model": model, "val_ap50": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "test_ap50": meta.get("test_ap50"), "epochs_done": result["epochs_done"],
                "finished": result["finished"], "input_range_fix": result["input_range_fix"]}
