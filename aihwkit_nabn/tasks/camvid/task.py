"""CamVid semantic segmentation as a :class:`~aihwkit_nabn.evaluation.task.Task`: data, mIoU, view, recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ...errors import ConfigError
from ...evaluation.metrics import MeanIoU
from ...evaluation.task import Option, PathLike, Task, check_eval_split, float_option, int_option
from ...utils.batches import TensorBatches
from .data import CLASSES, VOID, load_camvid, normalize
from .models import logits_of
from .recipe import DATASET_NAME, class_weights, train_hwa_camvid, train_segmenter, weighted_loss
from .views import CROP, fixed_view

__all__ = ["CamVidTask"]


class CamVidTask(Task):
    """CamVid in the SegNet split at 240x180: 11 classes (void ignored), mIoU, the scale-crop-flip view.

    ``source``: the archive or its extracted folder (default ``../shared/data/camvid_240x180.tar.gz`` or
    ``$AIHWKIT_NABN_CAMVID``). Calibration and fine-tuning images come from the 367 training images only, in
    one fixed, seeded training view (random scale 1-1.5, 176x224 crop, flip); BatchNorm statistics pool over
    the batch and every pixel. The val split (101 images) is for every choice; the test split (233) is read
    for reported numbers only.
    """

    name = "camvid"
    title = DATASET_NAME
    metric_name = "miou"
    default_config = Path(__file__).resolve().with_name("config.toml")
    calib_view = f"training augmentation (random scale 1-1.5, {CROP[0]}x{CROP[1]} crop, flip), seeded"
    train_options = (
        Option("batch_size", int_option(1), "images per step (default 16)"),
        Option("lr", float_option(positive=True), "peak learning rate of AdamW (default 2e-3)"),
        Option("weight_decay", float_option(positive=True), "AdamW weight decay (default 1e-4)"),
        Option("width", int_option(1), "channels at the first level of unet_small (default 32)"),
    )
    hwa_options = (
        Option("batch_size", int_option(1), "images per step (default 16)"),
        Option("lr", float_option(positive=True), "peak learning rate of AnalogSGD (default 0.01)"),
    )

    def __init__(self, source: Optional[PathLike] = None):
        super().__init__(source)
        self._splits: Dict[str, Tuple[Tensor, Tensor]] = {}

    def split(self, name: str) -> Tuple[Tensor, Tensor]:
        """Return ``(uint8 images [N, 3, H, W], int64 labels [N, H, W])`` of a split (read once)."""
        if name not in self._splits:
            images, labels, _ = load_camvid(name, self.source)
            self._splits[name] = (images, labels.long())
        return self._splits[name]

    def model_inputs(self, split: str, samples: int, device: Any = None) -> Tensor:
        return normalize(self.split(split)[0][:samples]).to(device)

    def sizes(self) -> Dict[str, int]:
        return {"train": 367, "val": 101, "test": 233} if self.source is None else {}

    def _subset(self, n: int, total: int, seed: int) -> Tensor:
        """A fixed, seeded random subset of ``n`` of ``total`` images (all of them for ``n`` = 0 or ``total``)."""
        if n <= 0 or n >= total:
            return torch.arange(total)
        return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values

    def test_metric(self, samples: int = 0, *, seed: int = 0, batch_size: int = 32,
                    device: Optional[torch.device] = None, split: str = "test") -> MeanIoU:
        images, labels = self.split(check_eval_split(split))
        idx = self._subset(samples, len(images), seed)
        batches = TensorBatches(images[idx], labels[idx], batch_size=batch_size, transform=normalize, device=device)
        return MeanIoU(batches, num_classes=len(CLASSES), ignore_index=VOID, output_fn=logits_of, samples=len(idx))

    def _view(self, samples: int, seed: int) -> Tuple[Tensor, Tensor]:
        images, labels = self.split("train")
        if samples > len(images):
            raise ConfigError(f"{samples} training images requested but the CamVid train split has {len(images)}")
        idx = self._subset(samples, len(images), seed)
        return fixed_view(images[idx], labels[idx], seed)

    def calibration_data(self, samples: int, *, seed: int = 0, batch_size: int = 16,
                         device: Optional[torch.device] = None, balanced: bool = True) -> TensorBatches:
        # ``balanced`` is about classes per image, which dense labels do not have: every image holds many
        view, _ = self._view(samples, seed)
        return TensorBatches(view, batch_size=batch_size, transform=normalize, device=device)

    def labeled_data(self, samples: int, *, seed: int = 1, batch_size: int = 16,
                     device: Optional[torch.device] = None) -> TensorBatches:
        view, labels = self._view(samples, seed)
        return TensorBatches(view, labels, batch_size=batch_size, transform=normalize, device=device)

    def bnft_loss(self) -> Callable[[Any, Any], torch.Tensor]:
        """The training loss (log-frequency class-weighted cross-entropy, void ignored) on ``out["out"]``."""
        return weighted_loss(class_weights(self.split("train")[1]))

    def train(self, *, arch: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
              progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        result = train_segmenter(arch, epochs=epochs, out_path=out, data_source=self.source, seed=seed,
                                 device=device, progress=progress, command=command, **options)
        return {"arch": arch, "val_miou": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "test_miou": (result["meta"] or {}).get("test_miou"), "epochs_done": result["epochs_done"],
                "finished": result["finished"]}

    def train_hwa(self, *, model: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
                  progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        result = train_hwa_camvid(model, epochs=epochs, out_path=out, data_source=self.source, seed=seed,
                                  device=device, progress=progress, command=command or None, **options)
        return {"model": model, "val_miou": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "test_miou": (result["meta"] or {}).get("test_miou"), "epochs_done": result["epochs_done"],
                "finished": result["finished"], "input_range_fix": result["input_range_fix"]}
