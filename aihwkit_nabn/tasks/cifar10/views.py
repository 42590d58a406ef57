"""The CIFAR-10 training view: random crop after zero padding, horizontal flip and Cutout, on the device.

The whole training set stays on the device as uint8; random crop (zero-pad 4), horizontal flip and Cutout
(DeVries & Taylor 2017, a 16x16 square of the mean colour) are two batched tensor ops per step, so there
is no per-image Python work and no DataLoader. Every training-style view (an epoch's batches, the
calibration view, the HWA range initialisation) draws its random parameters through :func:`draw_views`.
"""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import torch
import torch.nn.functional as F

from .data import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["random_crop_flip", "cutout", "training_view", "draw_views", "epoch_order", "epoch_batches",
           "augment_like_training", "normalize_on", "CUTOUT_SIZE"]

CUTOUT_SIZE = 16  # DeVries & Taylor 2017's square for CIFAR-10


def normalize_on(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 -> normalised float32, keeping the input's memory format (channels_last stays).

    Training normalises this way (multiplying by 1/std); :func:`~.data.normalize`, used for evaluation and
    calibration batches, divides by std. The two differ by at most one rounding and are kept as the
    shipped models were trained and evaluated.
    """
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
        yield normalize_on(x), labels[idx]


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
