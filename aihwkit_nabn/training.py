"""Fast digital training of the CIFAR ResNets, and top-1 evaluation.

The whole training set stays on the device as uint8; random crop (zero-pad 4),
horizontal flip and Cutout (DeVries & Taylor 2017, a 16x16 square of the mean colour)
are two batched tensor ops per step, so there is no per-image Python work and no
DataLoader. On CUDA the model runs ``channels_last`` under bf16
autocast; on the CPU it runs in fp32. The learning rate follows a per-step linear
warmup then cosine decay to zero. Every epoch appends one JSON line to ``log_path``
and atomically saves a resumable state to ``resume_path``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from aihwkit_nabn.checkpoints import atomic_save, save_checkpoint
from aihwkit_nabn.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from aihwkit_nabn.errors import CheckpointError
from aihwkit_nabn.models.resnet_cifar import create_model

__all__ = ["train_classifier", "evaluate_top1", "train_baseline", "random_crop_flip", "cutout", "training_view",
           "augment_like_training", "draw_views", "epoch_order", "epoch_batches", "load_resume_state", "CUTOUT_SIZE"]

PathLike = Union[str, os.PathLike]
_RESUME_FORMAT = "aihwkit-nabn/train-state/v1"
DATASET_NAME = "CIFAR-10 (JPEG q75 copy)"
CUTOUT_SIZE = 16  # DeVries & Taylor 2017's square for CIFAR-10


# --------------------------------------------------------------------------- helpers

def _resolve_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def _normalize_on(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 -> normalised float32, keeping the input's memory format (channels_last stays)."""
    mean = torch.tensor(CIFAR10_MEAN, device=images_u8.device).view(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(CIFAR10_STD, device=images_u8.device).view(1, 3, 1, 1) * 255.0)
    return (images_u8.float() - mean) * inv_std


def random_crop_flip(images_u8: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor,
                     pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding plus horizontal flip, for a whole batch in one gather.

    Args:
        images_u8: ``[B, C, H, W]`` images (any dtype) on any device.
        shifts: int ``[B, 2]`` crop offsets ``(dy, dx)`` in ``0..2*pad``.
        flips: bool ``[B]``, True to mirror the image horizontally.

    Returns:
        ``[B, C, H, W]`` augmented images, in ``channels_last`` memory layout (the gather
        produces NHWC, which is what cuDNN wants anyway).
    """
    b, _c, h, w = images_u8.shape
    padded = F.pad(images_u8, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=images_u8.device)
    ar_w = torch.arange(w, device=images_u8.device)
    rows = shifts[:, 0:1] + ar_h  # [B, H]
    # A flip is just reversed column indices, so it costs nothing extra.
    cols = shifts[:, 1:2] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)  # [B, W]
    batch = torch.arange(b, device=images_u8.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def cutout(images_u8: torch.Tensor, centers: torch.Tensor, size: int = CUTOUT_SIZE) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): paint a ``size`` x ``size`` square of the dataset's mean colour.

    Args:
        images_u8: ``[B, 3, H, W]`` uint8 images (any memory layout); not modified.
        centers: int ``[B, 2]`` square centres ``(cy, cx)`` in ``0..H-1`` / ``0..W-1``; a square
            near the border is clipped, as in the paper.
        size: side of the square; 0 returns the images unchanged.

    Returns:
        the images with the squares painted, same shape and memory layout. The mean colour becomes
        (almost exactly) zero after normalisation, which is what the paper's zero mask does there.
    """
    if size <= 0:
        return images_u8
    _b, _c, h, w = images_u8.shape
    ar_h = torch.arange(h, device=images_u8.device)
    ar_w = torch.arange(w, device=images_u8.device)
    lo = size // 2
    in_rows = (ar_h >= centers[:, 0:1] - lo) & (ar_h < centers[:, 0:1] - lo + size)  # [B, H]
    in_cols = (ar_w >= centers[:, 1:2] - lo) & (ar_w < centers[:, 1:2] - lo + size)  # [B, W]
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [B, 1, H, W]
    fill = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=images_u8.dtype,
                        device=images_u8.device).view(1, -1, 1, 1)
    return torch.where(mask, fill, images_u8)


def training_view(images_u8: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, centers: torch.Tensor,
                  cutout_size: int = CUTOUT_SIZE, pad: int = 4) -> torch.Tensor:
    """The training augmentation of a batch: random crop after zero padding, flip, then Cutout.

    Returns ``[B, C, H, W]`` uint8 images (``channels_last`` layout, like :func:`random_crop_flip`).
    """
    return cutout(random_crop_flip(images_u8, shifts, flips, pad), centers, cutout_size)


def draw_views(n: int, gen: torch.Generator, image_size: Tuple[int, int] = (32, 32),
               pad: int = 4) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """Draw ``(shifts, flips, centers)`` for ``n`` images from ``gen``: the random part of :func:`training_view`.

    Every training-style view (an epoch's batches, the calibration view, the HWA range initialisation)
    draws through this one function, so they all see the same augmentation distribution.
    """
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    centers = torch.stack([torch.randint(0, image_size[0], (n,), generator=gen),
                           torch.randint(0, image_size[1], (n,), generator=gen)], 1)
    return shifts, flips, centers


def epoch_order(n_train: int, seed: int, epoch: int, device: Any,
                image_size: Tuple[int, int] = (32, 32)) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]":
    """Return ``(perm, shifts, flips, centers)`` of one epoch on ``device``: the shuffled order and the
    crop / flip / Cutout draws (see :func:`training_view`).

    They depend only on ``(seed, epoch)``, so a resumed run sees exactly the data of an uninterrupted one.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n_train, generator=gen)
    return tuple(t.to(device, non_blocking=True) for t in (perm, *draw_views(n_train, gen, image_size)))


def epoch_batches(images_u8: torch.Tensor, labels: torch.Tensor, seed: int, epoch: int, batch_size: int,
                  cutout_size: int = CUTOUT_SIZE) -> Iterator["tuple[torch.Tensor, torch.Tensor]"]:
    """Yield one epoch's ``(x, y)`` training batches on the images' device, in :func:`epoch_order`.

    ``x`` is the normalised :func:`training_view` of the batch (``channels_last`` layout), ``y`` its
    labels; the last incomplete batch is dropped (unless it is the only one).
    """
    perm, shifts, flips, centers = epoch_order(len(images_u8), seed, epoch, images_u8.device,
                                               tuple(images_u8.shape[-2:]))
    for step in range(max(1, len(images_u8) // batch_size)):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        x = training_view(images_u8[idx], shifts[idx], flips[idx], centers[idx], cutout_size)
        yield _normalize_on(x), labels[idx]


def augment_like_training(images_u8: torch.Tensor, seed: int = 0, pad: int = 4,
                          cutout_size: int = CUTOUT_SIZE) -> torch.Tensor:
    """Return one fixed, seeded training-style view of each image (zero-pad random crop, flip, Cutout), contiguous.

    Calibration data must look like the data the BatchNorm statistics were learned from: a network
    trained on padded random crops normalises with statistics that include the zero borders, and its
    later layers expect activations scaled that way. Re-estimating the statistics on plain training
    images lowers the first BN layer's mean variance by about a third and cost a ResNet-20 five points
    of digital accuracy (90.5% -> 85.3%; with the crop-and-flip view: 90.0%; ``results/calibration_view``).
    The shipped models are trained with Cutout too (``cutout_size``; 0 for a model trained without it).
    """
    gen = torch.Generator().manual_seed(seed)
    shifts, flips, centers = draw_views(len(images_u8), gen, tuple(images_u8.shape[-2:]), pad)
    return training_view(images_u8, shifts, flips, centers, cutout_size, pad).contiguous()


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
            x = _normalize_on(images[start:start + batch_size].to(device, non_blocking=True))
            y = labels[start:start + batch_size].to(device, non_blocking=True)
            correct += (model(x).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return 100.0 * correct.item() / len(images)


def _warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier per step: linear warmup to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# --------------------------------------------------------------------------- training

def train_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    label_smoothing: float = 0.0,
    warmup_epochs: float = 2.0,
    cutout_size: int = CUTOUT_SIZE,
    seed: int = 0,
    device: Any = None,
    log_path: Optional[PathLike] = None,
    resume_path: Optional[PathLike] = None,
    progress: bool = True,
    compile: Union[bool, str] = False,
    stop_after_epochs: Optional[int] = None,
    max_seconds: Optional[float] = None,
) -> Dict[str, Any]:
    """Train ``model`` in place with SGD + warmup/cosine LR, testing after every epoch.

    Args:
        model: a freshly initialised classifier (e.g. from ``create_model``); it is moved to
            ``device`` (and ``channels_last`` on CUDA) and trained in place.
        train_images, test_images: uint8 ``[N, 3, 32, 32]``; train_labels, test_labels: int64 ``[N]``.
        epochs: total epochs (the schedule spans all of them, also across resumes).
        batch_size: images per step; the last incomplete batch of each epoch is dropped.
        lr: peak learning rate (reached after ``warmup_epochs`` of linear warmup).
        momentum, weight_decay, nesterov: SGD settings (decay applies to all parameters).
        label_smoothing: passed to ``cross_entropy``.
        cutout_size: side of the Cutout square (0: crop and flip only); see :func:`training_view`.
        seed: fixes the shuffling and augmentation of every epoch (derived from ``seed`` and
            the epoch number, so a resumed run sees the same data order).
        device: None = CUDA if available else CPU.
        log_path: JSON-lines file, one line per epoch (truncated on a fresh start, appended on resume).
        resume_path: training state saved atomically after every epoch; if it exists at the
            start, training continues from it (hyper-parameters must match).
        progress: show a tqdm bar over epochs.
        compile: wrap the model's training forward in ``torch.compile`` (a speed-up; True or a
            ``torch.compile`` mode such as ``"reduce-overhead"``, which adds CUDA graphs). If
            compiling fails, training warns and continues uncompiled.
        stop_after_epochs: train at most this many epochs in this call, then return with
            ``finished=False`` (the schedule still spans ``epochs``; call again to resume).
        max_seconds: stop after the first epoch that ends past this many seconds of this
            call (for time-limited jobs; resume continues the run).

    Returns:
        dict with ``top1`` (final test accuracy, %, on the full test set), ``history``
        (per-epoch dicts), ``seconds`` (training time incl. earlier resumed parts),
        ``epochs``, ``seed``, ``hparams``, ``device``, ``torch_version``, ``resumed_from_epoch``,
        ``epochs_done`` and ``finished`` (False when stopped early by ``stop_after_epochs`` or
        ``max_seconds``; ``top1`` is then the accuracy after the last completed epoch).
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("images and labels differ in length")
    if train_images.dtype != torch.uint8 or test_images.dtype != torch.uint8:
        raise TypeError("images must be uint8 [N, 3, H, W] tensors")
    dev = _resolve_device(device)
    cuda = dev.type == "cuda"
    if cuda:
        # Fixed input shapes: let cuDNN pick the fastest kernels; TF32 for any fp32 matmul.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    n_train = len(train_images)
    steps_per_epoch = max(1, n_train // batch_size)
    hparams = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "nesterov": nesterov, "label_smoothing": label_smoothing,
        "warmup_epochs": warmup_epochs, "schedule": "linear warmup + cosine to 0, per step",
        "augmentation": "random crop (zero pad 4) + horizontal flip"
                        + (f" + cutout {cutout_size}x{cutout_size}" if cutout_size > 0 else ""),
        "cutout_size": cutout_size,
        "precision": "bf16 autocast, channels_last" if cuda else "fp32",
        "n_train": n_train, "steps_per_epoch": steps_per_epoch,
    }

    model.to(dev)
    if cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay, nesterov=nesterov)
    total_steps = epochs * steps_per_epoch
    # Cap the warmup at a fifth of the run so short runs still anneal to zero.
    warmup_steps = min(total_steps // 5, int(round(warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, warmup_steps))

    start_epoch, history, prior_seconds = 0, [], 0.0
    resume_file = Path(resume_path) if resume_path is not None else None
    if resume_file is not None and resume_file.exists():
        state = load_resume_state(resume_file, hparams, seed)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        prior_seconds = float(state["seconds"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
    else:
        torch.manual_seed(seed)
    resumed_from = start_epoch

    log_file = Path(log_path) if log_path is not None else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:
            log_file.write_text("")  # fresh run: do not mix with an old log

    # Keep the data on the device once; uint8 is 4x smaller than float.
    x_train = train_images.to(dev)
    y_train = train_labels.to(dev, dtype=torch.int64)
    x_test = test_images.to(dev)
    y_test = test_labels.to(dev, dtype=torch.int64)

    if compile:
        train_forward = torch.compile(model, mode=None if compile is True else str(compile))
        hparams["compile"] = "default" if compile is True else str(compile)
    else:
        train_forward = model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    t_start = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs,
               desc="train", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        t_epoch = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for x, y in epoch_batches(x_train, y_train, seed, epoch, batch_size, cutout_size):
            if not cuda:
                x = x.contiguous()
            with autocast:
                if train_forward is not model and seen == 0 and epoch == start_epoch:
                    train_forward = _first_compiled_call(train_forward, model, x)
                logits = train_forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            # Accumulate on the device: no host sync inside the epoch.
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        test_acc = evaluate_top1(model, x_test, y_test, device=dev)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / seen,
            "train_acc": 100.0 * correct.item() / seen,
            "test_acc": test_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - t_epoch,
            "seconds": prior_seconds + time.perf_counter() - t_start,
        }
        history.append(record)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        if resume_file is not None:
            atomic_save({
                "format": _RESUME_FORMAT,
                "epoch": epoch + 1,
                "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "seconds": record["seconds"],
                "seed": seed,
                "hparams": hparams,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if cuda else None,
            }, resume_file)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", test=f"{test_acc:.2f}")
        done_here = epoch + 1 - resumed_from
        if (stop_after_epochs is not None and done_here >= stop_after_epochs) or (
            max_seconds is not None and time.perf_counter() - t_start >= max_seconds
        ):
            break
    bar.close()

    epochs_done = history[-1]["epoch"] if history else start_epoch
    if history:
        top1 = history[-1]["test_acc"]
    else:  # nothing trained and no history (e.g. stop_after_epochs=0)
        top1 = evaluate_top1(model, x_test, y_test, device=dev)
    return {
        "top1": top1,
        "history": history,
        "seconds": prior_seconds + time.perf_counter() - t_start,
        "epochs": epochs,
        "seed": seed,
        "hparams": hparams,
        "device": _device_name(dev),
        "torch_version": str(torch.__version__),
        "resumed_from_epoch": resumed_from,
        "epochs_done": epochs_done,
        "finished": epochs_done >= epochs,
    }


_RESUME_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                "label_smoothing", "warmup_epochs", "cutout_size", "n_train")


def _first_compiled_call(compiled: Any, model: nn.Module, x: torch.Tensor) -> Any:
    """Compile ``compiled`` on a throw-away forward of ``x``; on failure warn and return ``model``.

    Compilation errors surface only at the first forward and backward; a speed-up must never cost the
    run. The trial step's output and gradients are discarded, but its forward updates the BatchNorm
    running statistics once, so the model's state is saved before and put back after.
    """
    import warnings  # pylint: disable=import-outside-toplevel

    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        compiled(x).float().sum().backward()
        return compiled
    except Exception as exc:  # pylint: disable=broad-except
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training uncompiled", RuntimeWarning)
        return model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
        for param in model.parameters():
            param.grad = None


def load_resume_state(path: Path, hparams: Dict[str, Any], seed: int, *, fmt: str = _RESUME_FORMAT,
                      keys: Tuple[str, ...] = _RESUME_KEYS, what: str = "training state",
                      opaque: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Load a resumable training state (``weights_only=True``) and check it belongs to this run.

    ``fmt`` is the state's format tag, ``keys`` the hyper-parameters that must match ``hparams`` (and
    ``seed``); values of ``opaque`` keys are shown as ``<differs>`` in the error. Returns the state dict.

    Raises:
        CheckpointError: unreadable file, another format, or other settings (named in the message).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {what} {str(path)!r} ({type(exc).__name__}); delete it to start afresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{str(path)!r} is not an aihwkit-nabn {what}")
    diff = {k: (state["hparams"].get(k), hparams[k]) for k in keys if state["hparams"].get(k) != hparams[k]}
    if state.get("seed") != seed:
        diff["seed"] = (state.get("seed"), seed)
    if diff:
        shown = {k: ("<differs>" if k in opaque else v) for k, v in diff.items()}
        raise CheckpointError(
            f"{what} {str(path)!r} was made with other settings "
            f"(saved vs now: {shown}); delete it or pass a different resume_path"
        )
    return state


# --------------------------------------------------------------------------- baselines

def train_baseline(
    arch: str,
    *,
    epochs: int,
    out_path: PathLike,
    data_source: Optional[PathLike] = None,
    seed: int = 0,
    device: Any = None,
    cache_dir: Optional[PathLike] = None,
    **hparams: Any,
) -> Dict[str, Any]:
    """Train a registry model on CIFAR-10 (JPEG q75 copy) and save it with :func:`save_checkpoint`.

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
    train_x, train_y = load_cifar10("train", data_source, cache_dir)
    test_x, test_y = load_cifar10("test", data_source, cache_dir)
    result = train_classifier(
        model, train_x, train_y, test_x, test_y,
        epochs=epochs, seed=seed, device=device, log_path=log_path, resume_path=resume_path,
        **hparams,
    )
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(hparams.items())
                     if k not in ("progress", "stop_after_epochs", "max_seconds"))
    command = (f"aihwkit_nabn.training.train_baseline({arch!r}, epochs={epochs}, seed={seed}"
               + (f", {args}" if args else "") + f", out_path={out.name!r})")
    meta = {
        "arch": arch,
        "accuracy": result["top1"],
        "epochs": epochs,
        "seed": seed,
        "hparams": result["hparams"],
        "command": command,
        "seconds": result["seconds"],
        "device": result["device"],
        "torch_version": result["torch_version"],
        "dataset": DATASET_NAME,
        "n_test": len(test_y),
        "history": [{"epoch": h["epoch"], "test_acc": h["test_acc"], "train_loss": h["train_loss"]}
                    for h in result["history"]],
    }
    save_checkpoint(out, model, arch, meta)
    return {**result, "out_path": str(out), "meta": meta}
