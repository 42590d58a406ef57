"""The Penn-Fudan training recipes: a detector trained from scratch, and its hardware-aware (HWA) fine-tuning.

Both train on the 100 training images with the detection view (:mod:`.views`: box-keeping random crop, flip;
the detector's own multi-scale resize), minimise the detector's own losses, and measure box AP50 on the 20
**val** images after every epoch (every choice is made on val). :func:`train_detector` and
:func:`train_hwa_pennfudan` are what ``aihwkit-nabn train --task pennfudan`` / ``hwa --task pennfudan`` run;
the checkpoint's meta records the command, seed, settings, val AP50 and the final model's test AP50 / mAP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ...evaluation.metrics import DetectionAP
from ...training.checkpoints import save_checkpoint
from ...training.digital import fit_classifier
from ...training.hwa import fit_hwa
from ...training.hwa_checkpoint import hwa_meta, hwa_source, save_hwa_checkpoint
from ...training.registry import create_model
from .data import load_pennfudan, normalize
from .views import epoch_batches, training_view

__all__ = ["train_detector", "train_hwa_pennfudan", "DATASET_NAME", "detection_step"]

PathLike = Union[str, os.PathLike]
DATASET_NAME = "Penn-Fudan pedestrians (100 train / 20 val / 50 test, seeded split)"


def detection_step(model: nn.Module, images: List[Tensor], targets: List[dict]) -> Tuple[Tensor, None]:
    """A training step's loss: the sum of the detector's own losses (training mode, with targets)."""
    return sum(model(images, targets).values()), None


class _DetData:
    """Train images/boxes, the val and test AP, the loops' batches."""

    def __init__(self, source: Optional[PathLike], *, seed: int, batch_size: int, cache_dir: Optional[PathLike] = None):
        self.images, self.boxes, _ = load_pennfudan("train", source, cache_dir)
        self.source, self.cache_dir, self.seed, self.batch_size = source, cache_dir, seed, batch_size

    def batches(self, epoch: int, device: torch.device) -> Iterator[Tuple[List[Tensor], List[dict]]]:
        return epoch_batches(self.images, self.boxes, self.seed, epoch, self.batch_size, device)

    def metric(self, split: str, device: torch.device) -> DetectionAP:
        images, boxes, _ = load_pennfudan(split, self.source, self.cache_dir)
        data = []
        for start in range(0, len(images), 4):
            x = [normalize(img.to(device)) for img in images[start:start + 4]]
            y = [{"boxes": b.to(device), "labels": torch.ones(len(b), dtype=torch.int64, device=device)}
                 for b in boxes[start:start + 4]]
            data.append((x, y))
        return DetectionAP(data, samples=len(images))

    def evaluate_val(self, net: nn.Module, device: torch.device) -> float:
        return self.metric("val", device)(net)["ap50"]

    def range_init(self, device: torch.device) -> Iterator[List[Tensor]]:
        """Training views of random training images, forever, for aihwkit's input-range init."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
        while True:
            idx = torch.randint(0, len(self.images), (min(self.batch_size, len(self.images)),), generator=gen).tolist()
            yield [normalize(training_view(self.images[i], self.boxes[i], gen)[0].to(device)) for i in idx]


def _meta(result: Dict[str, Any], arch: str, epochs: int, seed: int, command: str, test: Dict[str, float],
          **extra: Any) -> Dict[str, Any]:
    return {
        "arch": arch, "task": "pennfudan", "dataset": DATASET_NAME, "epochs": epochs, "seed": seed,
        "val_ap50": result["top1"], "test_ap50": test["ap50"], "test_map": test["map"], "accuracy": test["ap50"],
        "accuracy_kind": "test AP50 (%)", "hparams": result["hparams"], "command": command,
        "seconds": result["seconds"], "device": result["device"], "torch_version": result["torch_version"],
        "history": [{"epoch": h["epoch"], "val_ap50": h["val_ap50"], "train_loss": h["train_loss"]}
                    for h in result["history"]], **extra,
    }


def train_detector(arch: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                   seed: int = 0, device: Any = None, batch_size: int = 4, lr: float = 0.01, weight_decay: float = 1e-4,
                   warmup_epochs: float = 2.0, cache_dir: Optional[PathLike] = None, command: str = "",
                   model_kwargs: Optional[Dict[str, Any]] = None, **hparams: Any) -> Dict[str, Any]:
    """Train a registered Penn-Fudan detector from scratch (SGD + Nesterov, warmup + cosine) and save it.

    ``model_kwargs`` go to the builder (e.g. smaller ``min_size``/``max_size``); ``hparams`` to
    :func:`~aihwkit_nabn.training.digital.fit_classifier`. The checkpoint is written once all ``epochs`` are
    done, with the final model's val AP50 and test AP50 / mAP in its meta.
    """
    out = Path(out_path)
    hparams.setdefault("log_path", str(out) + ".log.jsonl")
    hparams.setdefault("resume_path", str(out) + ".resume.pt")
    torch.manual_seed(seed)
    model = create_model(arch, **dict(model_kwargs or {}))
    data = _DetData(data_source, seed=seed, batch_size=batch_size, cache_dir=cache_dir)
    result = fit_classifier(
        model, epoch_batches=data.batches, n_train=len(data.images), evaluate=data.evaluate_val, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed,
        device=device, train_step=detection_step, eval_key="val_ap50",
        # Every batch has another input shape (multi-scale resize, images of many sizes): with cuDNN autotuning
        # each new shape, epochs took 5-70 s instead of 2.5 s on the H200 (results/pennfudan/train_call1/).
        cudnn_benchmark=False,
        data_hparams={"augmentation": "box-keeping random crop 70-100 %, flip, the detector's multi-scale resize"},
        **hparams,
    )
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    test = data.metric("test", next(model.parameters()).device)
    values = test(model)
    meta = _meta(result, arch, epochs, seed, command or f"train_detector({arch!r}, epochs={epochs}, seed={seed})",
                 values, test_ap=test.last, n_train=len(data.images))
    save_checkpoint(out, model, arch, meta)
    return {**result, "out_path": str(out), "meta": meta}


def train_hwa_pennfudan(model: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                        seed: int = 0, device: Any = None, batch_size: int = 4, lr: float = 0.005,
                        cache_dir: Optional[PathLike] = None, command: Optional[str] = None,
                        **hparams: Any) -> Dict[str, Any]:
    """HWA-fine-tune a Penn-Fudan detector (registry name or checkpoint) and save its HWA checkpoint."""
    digital, source_meta, arch, out = hwa_source(model, out_path, hparams)
    data = _DetData(data_source, seed=seed, batch_size=batch_size, cache_dir=cache_dir)
    result = fit_hwa(digital, epoch_batches=data.batches, range_init_batches=data.range_init,
                     n_train=len(data.images), evaluate=data.evaluate_val, epochs=epochs, batch_size=batch_size,
                     lr=lr, seed=seed, device=device, train_step=detection_step, eval_key="val_ap50",
                     data_hparams={"augmentation": "as the digital recipe"}, **hparams)
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    values = data.metric("test", next(result["model"].parameters()).device)(result["model"])
    meta = _meta(result, arch, epochs, seed, command or f"train_hwa_pennfudan({str(model)!r}, epochs={epochs})",
                 values, accuracy_kind="HWA model, eval mode, unprogrammed, no drift: test AP50 (%)",
                 **hwa_meta(result, source_meta, model))
    save_hwa_checkpoint(out, result["model"], arch, meta, digital_layers=result["hparams"]["digital_layers"])
    return {**result, "out_path": str(out), "meta": meta}
