"""The CIFAR-10 training recipes: digital baselines and hardware-aware (HWA) fine-tuning, and top-1 on images.

Both recipes train on the whole training set kept on the device as uint8, augmented per batch with the
training view (:mod:`.views`: zero-pad random crop, flip, Cutout), and test top-1 after every epoch; the
loop itself is :func:`aihwkit_nabn.training.loop.fit`. :func:`train_baseline` and
:func:`train_hwa_cifar10` are what ``aihwkit-nabn train`` / ``aihwkit-nabn hwa`` run; they save
checkpoints with the command, seed, settings and accuracy in their meta.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch
from torch import Tensor, nn

from ...training.checkpoints import save_checkpoint
from ...training.digital import fit_classifier
from ...training.hwa import fit_hwa
from ...training.hwa_checkpoint import hwa_meta, hwa_source, save_hwa_checkpoint
from ...training.registry import create_model
from .data import VAL_SEED, load_cifar10, split_off_val
from .views import CUTOUT_SIZE, draw_views, epoch_batches, normalize_on, training_view

__all__ = ["evaluate_top1", "train_classifier", "train_baseline", "train_hwa", "train_hwa_cifar10",
           "range_init_batches", "DATASET_NAME"]

PathLike = Union[str, os.PathLike]
DATASET_NAME = "CIFAR-10 (JPEG q75 copy)"


@torch.no_grad()
def evaluate_top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 512, device: Any = None) -> float:
    """Top-1 accuracy in percent (0-100) of a digital model on all ``images`` (uint8 ``[N,3,32,32]``).

    BatchNorm runs in eval mode (running statistics); the model's previous train/eval
    mode is restored afterwards. Runs in fp32. ``device`` defaults to the model's device.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, len(images), batch_size):
            x = normalize_on(images[start:start + batch_size].to(device, non_blocking=True))
            y = labels[start:start + batch_size].to(device, non_blocking=True)
            correct += (model(x).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return 100.0 * correct.item() / len(images)


def _augmentation(cutout_size: int, val_samples: int = 0) -> Dict[str, Any]:
    """The data settings recorded with the hyper-parameters (and checked on resume: ``cutout_size`` and,
    with a held-out validation split, ``val_samples``)."""
    settings = {"augmentation": "random crop (zero pad 4) + horizontal flip"
                                + (f" + cutout {cutout_size}x{cutout_size}" if cutout_size > 0 else ""),
                "cutout_size": cutout_size}
    if val_samples:
        settings.update(val_samples=val_samples, val_seed=VAL_SEED,
                        evaluated_on=f"{val_samples} held-out training images (split_off_val)")
    return settings


def _resume_keys(val_samples: int) -> tuple:
    return ("cutout_size", "val_samples") if val_samples else ("cutout_size",)


def _split(data_source: Optional[PathLike], cache_dir: Optional[PathLike], val_samples: int
           ) -> "tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]":
    """``(train_x, train_y, eval_x, eval_y, test_x, test_y)``: with ``val_samples``, training on the rest of
    the training split and evaluating every epoch on the held-out images; else on the test split."""
    train_x, train_y = load_cifar10("train", data_source, cache_dir)
    test_x, test_y = load_cifar10("test", data_source, cache_dir)
    if not val_samples:
        return train_x, train_y, test_x, test_y, test_x, test_y
    keep, val = split_off_val(train_y, val_samples)
    return train_x[keep], train_y[keep], train_x[val], train_y[val], test_x, test_y


def _eval_key(val_samples: int) -> str:
    """The history's name of the per-epoch metric: ``val_acc`` with a held-out split, else ``test_acc``."""
    return "val_acc" if val_samples else "test_acc"


def _accuracy_meta(model: nn.Module, result: Dict[str, Any], test_x: Tensor, test_y: Tensor, val_samples: int,
                   n_train: int) -> Dict[str, Any]:
    """The meta's accuracy entries and history of a finished run: with a held-out split the test split is read
    here, once, for the final model (the epochs saw only val), beside the val accuracy; else the last epoch's
    test accuracy."""
    key = _eval_key(val_samples)
    history = [{"epoch": h["epoch"], key: h[key], "train_loss": h["train_loss"]} for h in result["history"]]
    if not val_samples:
        return {"accuracy": result["top1"], "history": history}
    return {"accuracy": evaluate_top1(model, test_x, test_y), "val_accuracy": result["top1"],
            "val_samples": val_samples, "val_seed": VAL_SEED, "n_train": n_train, "history": history}


def _check_images(train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first unusable image or label tensor."""
    for name, x, y in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"{name} images must be a uint8 [N, 3, H, W] tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} {name} images but {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"no {name} images")


class _EpochData:
    """The train/test tensors of a run, moved to the device once, as the loops' batches and test metric."""

    def __init__(self, train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor, *,
                 seed: int, batch_size: int, cutout_size: int):
        _check_images(train_images, train_labels, test_images, test_labels)
        self.cpu = (train_images, train_labels, test_images, test_labels)
        self.seed, self.batch_size, self.cutout_size = seed, batch_size, cutout_size
        self.device: Optional[torch.device] = None
        self.tensors = self.cpu

    def on(self, device: torch.device) -> "tuple[Tensor, Tensor, Tensor, Tensor]":
        """Return ``(x_train, y_train, x_test, y_test)`` on ``device`` (labels int64; uint8 images are 4x
        smaller than float)."""
        if self.device != device:
            x, y, tx, ty = self.cpu
            self.tensors = (x.to(device), y.to(device, dtype=torch.int64), tx.to(device),
                            ty.to(device, dtype=torch.int64))
            self.device = device
        return self.tensors

    def batches(self, epoch: int, device: torch.device) -> Iterator["tuple[Tensor, Tensor]"]:
        """The epoch's training batches (:func:`~.views.epoch_batches`)."""
        x, y, _, _ = self.on(device)
        return epoch_batches(x, y, self.seed, epoch, self.batch_size, self.cutout_size)

    def evaluate(self, net: nn.Module, device: torch.device) -> float:
        """Top-1 on the test tensors."""
        _, _, tx, ty = self.on(device)
        return evaluate_top1(net, tx, ty, device=device)


def train_classifier(
    model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 256,
    cutout_size: int = CUTOUT_SIZE,
    seed: int = 0,
    val_samples: int = 0,
    **kwargs: Any,
) -> Dict[str, Any]:
    """Train a CIFAR classifier in place on uint8 images with the training view; test top-1 every epoch.

    With ``val_samples`` (the size of a held-out validation split the caller made with
    :func:`~.data.split_off_val`), ``test_images``/``test_labels`` are those validation images: the
    history then records ``val_acc`` and the settings the split (checked on resume).

    ``train_images``/``test_images`` are uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``. Each epoch's
    batches follow :func:`~.views.epoch_batches` (shuffled and augmented from ``(seed, epoch)``, so a
    resumed run sees the same data; the last incomplete batch is dropped); ``cutout_size`` is the Cutout
    square (0: crop and flip only). The other keywords (``lr``, ``momentum``, ``weight_decay``,
    ``nesterov``, ``label_smoothing``, ``warmup_epochs``, ``device``, ``log_path``, ``resume_path``,
    ``progress``, ``compile``, ``stop_after_epochs``, ``max_seconds``) and the result are those of
    :func:`aihwkit_nabn.training.digital.fit_classifier`.
    """
    data = _EpochData(train_images, train_labels, test_images, test_labels, seed=seed, batch_size=batch_size,
                      cutout_size=cutout_size)
    return fit_classifier(model, epoch_batches=data.batches, n_train=len(train_images), evaluate=data.evaluate,
                          epochs=epochs, batch_size=batch_size, seed=seed,
                          data_hparams=_augmentation(cutout_size, val_samples),
                          data_resume_keys=_resume_keys(val_samples),
                          eval_key=_eval_key(val_samples), **kwargs)


def range_init_batches(images: Tensor, *, batch_size: int, seed: int, device: torch.device,
                       cutout_size: int = CUTOUT_SIZE) -> Iterator[Tensor]:
    """Yield, forever, normalised training-view batches of random training images for the input-range init.

    Random images (uint8 ``[N, 3, H, W]``, drawn with a generator seeded apart from the per-epoch
    streams) augmented like the training batches that aihwkit would initialise the ranges from.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 - 1)  # apart from the per-epoch streams
    while True:
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
        shifts, flips, centers = (t.to(device) for t in draw_views(len(idx), gen, tuple(images.shape[-2:])))
        yield normalize_on(training_view(images[idx].to(device), shifts, flips, centers, cutout_size)).contiguous()


def train_hwa(
    digital_model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    cutout_size: int = CUTOUT_SIZE,
    seed: int = 0,
    val_samples: int = 0,
    **kwargs: Any,
) -> Dict[str, Any]:
    """Fine-tune an analog copy of a CIFAR classifier hardware-aware on uint8 images; the input is not modified.

    ``val_samples``: as in :func:`train_classifier` (the evaluated images are a held-out validation split).

    Batches as in :func:`train_classifier` (training view, ``cutout_size``); the input ranges are
    initialised from :func:`range_init_batches`. The other keywords (``rpu_config``, ``lr``,
    ``momentum``, ``weight_decay``, ``nesterov``, ``device``, ``digital_layers``, ``max_seconds``,
    ``stop_after_epochs``, ``log_path``, ``resume_path``, ``progress``) and the result are those of
    :func:`aihwkit_nabn.training.hwa.fit_hwa`.
    """
    data = _EpochData(train_images, train_labels, test_images, test_labels, seed=seed, batch_size=batch_size,
                      cutout_size=cutout_size)

    def init_batches(device: torch.device) -> Iterator[Tensor]:
        return range_init_batches(train_images, batch_size=batch_size, seed=seed, device=device,
                                  cutout_size=cutout_size)

    return fit_hwa(digital_model, epoch_batches=data.batches, range_init_batches=init_batches,
                   n_train=len(train_images), evaluate=data.evaluate, epochs=epochs, batch_size=batch_size, seed=seed,
                   data_hparams=_augmentation(cutout_size, val_samples), data_resume_keys=_resume_keys(val_samples),
                   eval_key=_eval_key(val_samples), **kwargs)


def train_baseline(
    arch: str,
    *,
    epochs: int,
    out_path: PathLike,
    data_source: Optional[PathLike] = None,
    seed: int = 0,
    device: Any = None,
    cache_dir: Optional[PathLike] = None,
    val_samples: int = 0,
    **hparams: Any,
) -> Dict[str, Any]:
    """Train a registry model on CIFAR-10 (JPEG q75 copy) and save it with :func:`save_checkpoint`.

    ``val_samples`` (e.g. 5000): hold that many training images out (:func:`~.data.split_off_val`), train on
    the rest, evaluate on them after every epoch, and read the test split once, for the final model
    (``accuracy`` in the meta; ``val_accuracy`` beside it). 0: train on all 50,000 and test every epoch.

    ``hparams`` go to :func:`train_classifier` (batch_size, lr, ...). ``log_path`` and
    ``resume_path`` default to ``<out_path>.log.jsonl`` and ``<out_path>.resume.pt``, so
    re-running the same call after an interruption continues where it stopped.

    Pass ``max_seconds=`` (or ``stop_after_epochs=``) to split a long run over several calls
    (e.g. a 10-minute job limit); the checkpoint is written only once all ``epochs`` are done.

    Returns:
        the :func:`train_classifier` result plus ``out_path`` (None while unfinished) and the
        checkpoint ``meta`` (arch, accuracy, epochs, seed, hparams, command, seconds, device,
        torch version, dataset).
    """
    out = Path(out_path)
    log_path = hparams.pop("log_path", str(out) + ".log.jsonl")
    resume_path = hparams.pop("resume_path", str(out) + ".resume.pt")
    torch.manual_seed(seed)  # model initialisation depends on the seed only
    model = create_model(arch)
    train_x, train_y, eval_x, eval_y, test_x, test_y = _split(data_source, cache_dir, val_samples)
    result = train_classifier(
        model, train_x, train_y, eval_x, eval_y,
        epochs=epochs, seed=seed, device=device, log_path=log_path, resume_path=resume_path,
        val_samples=val_samples, **hparams,
    )
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    accuracy = _accuracy_meta(model, result, test_x, test_y, val_samples, len(train_y))
    if val_samples:
        hparams = {**hparams, "val_samples": val_samples}
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(hparams.items())
                     if k not in ("progress", "stop_after_epochs", "max_seconds"))
    command = (f"aihwkit_nabn.tasks.cifar10.train_baseline({arch!r}, epochs={epochs}, seed={seed}"
               + (f", {args}" if args else "") + f", out_path={out.name!r})")
    meta = {
        "arch": arch,
        **accuracy,
        "epochs": epochs,
        "seed": seed,
        "hparams": result["hparams"],
        "command": command,
        "seconds": result["seconds"],
        "device": result["device"],
        "torch_version": result["torch_version"],
        "dataset": DATASET_NAME,
        "n_test": len(test_y),
    }
    save_checkpoint(out, model, arch, meta)
    return {**result, "out_path": str(out), "meta": meta}


def train_hwa_cifar10(model: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                      seed: int = 0, device: Any = None, cache_dir: Optional[PathLike] = None,
                      command: Optional[str] = None, val_samples: int = 0, **hparams: Any) -> Dict[str, Any]:
    """HWA-fine-tune a CIFAR-10 model and save its HWA checkpoint (the ``aihwkit-nabn hwa`` command).

    ``val_samples``: as in :func:`train_baseline` (val every epoch, the test split once at the end).

    ``model`` is a registry name (its shipped weights) or a checkpoint path
    (:func:`~aihwkit_nabn.training.checkpoints.load_model_spec`). ``hparams`` go to
    :func:`train_hwa`; ``log_path``/``resume_path`` default to ``<out_path>.log.jsonl`` /
    ``<out_path>.resume.pt``, so re-running the same call after an interruption (or ``max_seconds``)
    continues. The checkpoint is written once all ``epochs`` are done.

    Returns:
        the :func:`train_hwa` result plus ``out_path`` (None while unfinished) and ``meta``.
    """
    digital, source_meta, arch, out = hwa_source(model, out_path, hparams)
    train_x, train_y, eval_x, eval_y, test_x, test_y = _split(data_source, cache_dir, val_samples)
    result = train_hwa(digital, train_x, train_y, eval_x, eval_y, epochs=epochs, seed=seed, device=device,
                       val_samples=val_samples, **hparams)
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    meta = {
        "arch": arch, **_accuracy_meta(result["model"], result, test_x, test_y, val_samples, len(train_y)),
        "accuracy_kind": "HWA model, eval mode, unprogrammed, no drift", **hwa_meta(result, source_meta, model),
        "epochs": epochs, "seed": seed,
        "lr": result["hparams"]["lr"], "batch_size": result["hparams"]["batch_size"], "hparams": result["hparams"],
        "seconds": result["seconds"], "device": result["device"], "torch_version": result["torch_version"],
        "dataset": DATASET_NAME, "n_test": len(test_y),
        "command": command or (f"aihwkit_nabn.tasks.cifar10.train_hwa_cifar10({str(model)!r}, epochs={epochs}, "
                               f"seed={seed}, out_path={out.name!r})"),
    }
    save_hwa_checkpoint(out, result["model"], arch, meta, digital_layers=result["hparams"]["digital_layers"])
    return {**result, "out_path": str(out), "meta": meta}
