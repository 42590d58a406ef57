"""The CamVid training recipes: digital training from scratch and hardware-aware (HWA) fine-tuning.

Both train on the 367 training images kept on the device as uint8, augmented per batch with the training
view (:mod:`.views`: random scale 1-1.5, 176x224 crop, flip), with a class-weighted cross-entropy (the
log-frequency weights of ENet, Paszke et al. 2016: ``1 / ln(1.02 + p_c)`` for the pixel frequency ``p_c``
of class ``c`` in the training labels; void ignored), and measure mIoU on the **val** split after every
epoch: every choice is made on val. :func:`train_segmenter` and :func:`train_hwa_camvid` are what
``aihwkit-nabn train --task camvid`` / ``hwa --task camvid`` run; the checkpoint's meta records the
command, seed, settings, the val mIoU and the test mIoU of the final model (the test split read once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...evaluation.metrics import MeanIoU
from ...training.checkpoints import save_checkpoint
from ...training.digital import fit_classifier
from ...training.hwa import fit_hwa
from ...training.hwa_checkpoint import hwa_meta, hwa_source, save_hwa_checkpoint
from ...training.registry import create_model
from ...utils.batches import TensorBatches
from .data import CLASSES, VOID, load_camvid, normalize
from .models import logits_of
from .views import CROP, crop_for, draw_views, epoch_batches, training_view

__all__ = ["class_weights", "weighted_loss", "train_segmenter", "train_hwa_camvid", "DATASET_NAME"]

PathLike = Union[str, os.PathLike]
DATASET_NAME = "CamVid (SegNet split, 240x180)"


def class_weights(labels: Tensor) -> Tensor:
    """ENet's log-frequency class weights ``1 / ln(1.02 + p_c)`` from training labels (void ignored)."""
    counts = torch.bincount(labels.flatten().long(), minlength=VOID + 1)[: len(CLASSES)].double()
    return (1.0 / torch.log(1.02 + counts / counts.sum())).float()


def weighted_loss(weights: Optional[Tensor]):
    """``loss(logits, labels)``: cross-entropy with ``weights`` per class, void pixels ignored."""

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        w = None if weights is None else weights.to(logits.device)
        return F.cross_entropy(logits_of(logits), labels, weight=w, ignore_index=VOID)

    return loss


class _SegData:
    """Train images and labels on the device once; the val metric; the loops' batches."""

    def __init__(self, source: Optional[PathLike], *, seed: int, batch_size: int, cache_dir: Optional[PathLike] = None):
        self.train_x, train_y, _ = load_camvid("train", source, cache_dir)
        self.train_y = train_y.long()
        val_x, val_y, _ = load_camvid("val", source, cache_dir)
        self.val = (val_x, val_y.long())
        self.source, self.cache_dir = source, cache_dir
        self.seed, self.batch_size = seed, batch_size
        self.weights = class_weights(train_y)
        self.device: Optional[torch.device] = None

    def on(self, device: torch.device) -> None:
        if self.device != device:
            self.train_x, self.train_y = self.train_x.to(device), self.train_y.to(device)
            self.device = device

    def batches(self, epoch: int, device: torch.device) -> Iterator["tuple[Tensor, Tensor]"]:
        self.on(device)
        return epoch_batches(self.train_x, self.train_y, self.seed, epoch, self.batch_size)

    def metric(self, split: str, device: torch.device, batch_size: int = 32) -> MeanIoU:
        """mIoU on the val split (held out from training, for every choice) or, once at the end, the test split."""
        if split == "val":
            x, y = self.val
        else:
            x, y, _ = load_camvid(split, self.source, self.cache_dir)
            y = y.long()
        return MeanIoU(TensorBatches(x, y, batch_size=batch_size, transform=normalize, device=device),
                       num_classes=len(CLASSES), ignore_index=VOID, output_fn=logits_of, samples=len(y))

    def evaluate_val(self, net: nn.Module, device: torch.device) -> float:
        return self.metric("val", device)(net)

    def range_init(self, device: torch.device) -> Iterator[Tensor]:
        """Random training views, forever (apart from the per-epoch streams), for aihwkit's input-range init."""
        self.on(device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
        while True:
            idx = torch.randint(0, len(self.train_x), (min(self.batch_size, len(self.train_x)),), generator=gen)
            x, _ = training_view(self.train_x[idx.to(device)], self.train_y[idx.to(device)],
                                 draw_views(len(idx), gen), crop_for(self.train_x))
            yield normalize(x).contiguous()


def _meta(result: Dict[str, Any], arch: str, epochs: int, seed: int, command: str, test: float,
          **extra: Any) -> Dict[str, Any]:
    return {
        "arch": arch, "task": "camvid", "dataset": DATASET_NAME, "epochs": epochs, "seed": seed,
        "val_miou": result["top1"], "test_miou": test, "accuracy": test, "accuracy_kind": "test mIoU (%)",
        "hparams": result["hparams"], "command": command, "seconds": result["seconds"], "device": result["device"],
        "torch_version": result["torch_version"],
        "history": [{"epoch": h["epoch"], "val_miou": h["val_miou"], "train_loss": h["train_loss"]}
                    for h in result["history"]], **extra,
    }


def train_segmenter(arch: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                    seed: int = 0, device: Any = None, batch_size: int = 16, lr: float = 2e-3,
                    weight_decay: float = 1e-4, warmup_epochs: float = 2.0, cache_dir: Optional[PathLike] = None,
                    command: str = "", width: Optional[int] = None, **hparams: Any) -> Dict[str, Any]:
    """Train a registered CamVid model from scratch (AdamW, warmup + cosine, weighted CE) and save it.

    ``hparams`` go to :func:`~aihwkit_nabn.training.digital.fit_classifier` (``compile``, ``max_seconds``,
    ``stop_after_epochs``, ``progress`` ...); ``log_path``/``resume_path`` default to
    ``<out_path>.log.jsonl`` / ``<out_path>.resume.pt``. The checkpoint is written once all ``epochs`` are
    done, with the final model's val and test mIoU in its meta.
    """
    out = Path(out_path)
    hparams.setdefault("log_path", str(out) + ".log.jsonl")
    hparams.setdefault("resume_path", str(out) + ".resume.pt")
    torch.manual_seed(seed)  # model initialisation depends on the seed only
    model = create_model(arch, **({} if width is None else {"width": width}))
    data = _SegData(data_source, seed=seed, batch_size=batch_size, cache_dir=cache_dir)
    result = fit_classifier(
        model, epoch_batches=data.batches, n_train=len(data.train_x), evaluate=data.evaluate_val, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed,
        device=device, optimizer=torch.optim.AdamW, loss_fn=weighted_loss(data.weights), output_fn=logits_of,
        eval_key="val_miou",
        data_hparams={"augmentation": f"random scale 1-1.5, {CROP[0]}x{CROP[1]} crop, horizontal flip",
                      "loss": "cross-entropy, log-frequency class weights, void ignored"},
        **hparams,
    )
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    test = data.metric("test", next(model.parameters()).device)
    meta = _meta(result, arch, epochs, seed, command or f"train_segmenter({arch!r}, epochs={epochs}, seed={seed})",
                 test(model), test_pixel_acc=test.last["pixel_acc"], test_iou=test.last["iou"],
                 n_train=len(data.train_x))
    save_checkpoint(out, model, arch, meta)
    return {**result, "out_path": str(out), "meta": meta}


def train_hwa_camvid(model: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                     seed: int = 0, device: Any = None, batch_size: int = 16, lr: float = 0.01,
                     cache_dir: Optional[PathLike] = None, command: Optional[str] = None,
                     **hparams: Any) -> Dict[str, Any]:
    """HWA-fine-tune a CamVid model (registry name or checkpoint) on torch tiles and save its HWA checkpoint.

    ``hparams`` go to :func:`~aihwkit_nabn.training.hwa.fit_hwa` (``rpu_config``, ``max_seconds`` ...);
    the loss is the digital recipe's weighted cross-entropy; val mIoU after every epoch; the test mIoU of
    the final model (unprogrammed) in the meta.
    """
    digital, source_meta, arch, out = hwa_source(model, out_path, hparams)
    data = _SegData(data_source, seed=seed, batch_size=batch_size, cache_dir=cache_dir)
    result = fit_hwa(digital, epoch_batches=data.batches, range_init_batches=data.range_init,
                     n_train=len(data.train_x), evaluate=data.evaluate_val, epochs=epochs, batch_size=batch_size,
                     lr=lr, seed=seed, device=device, loss_fn=weighted_loss(data.weights), output_fn=logits_of,
                     eval_key="val_miou", data_hparams={"augmentation": "as the digital recipe"}, **hparams)
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    test = data.metric("test", next(result["model"].parameters()).device)
    meta = _meta(result, arch, epochs, seed, command or f"train_hwa_camvid({str(model)!r}, epochs={epochs})",
                 test(result["model"]), accuracy_kind="HWA model, eval mode, unprogrammed, no drift: test mIoU (%)",
                 **hwa_meta(result, source_meta, model))
    save_hwa_checkpoint(out, result["model"], arch, meta, digital_layers=result["hparams"]["digital_layers"])
    return {**result, "out_path": str(out), "meta": meta}
