"""The Penn-Fudan training view: random crop that keeps the boxes consistent, horizontal flip, scale jitter.

Per image (the images have different sizes, so this is per-image work, about 100 images an epoch): a
random crop of 70-100 % of each side, kept only if every pedestrian keeps at least half of its box (boxes
are clipped to the crop, otherwise the image is left uncropped), then a horizontal flip with probability
0.5. Scale jitter is the detector's own: its transform resizes every image to a random shorter side
(``min_size`` choices, :mod:`.models`) in training. Every training-style view (an epoch's batches, the
calibration and fine-tuning views) draws through :func:`training_view` with a seeded generator.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
from torch import Tensor

from .data import normalize

__all__ = ["training_view", "epoch_batches", "fixed_views", "CROP_RANGE", "KEEP_FRACTION"]

CROP_RANGE = (0.7, 1.0)
KEEP_FRACTION = 0.5


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def training_view(image: Tensor, boxes: Tensor, gen: torch.Generator) -> Tuple[Tensor, Tensor]:
    """One random training view of ``image`` (uint8 ``[3, H, W]``) and its ``[K, 4]`` boxes."""
    _, h, w = image.shape
    fw, fh = (CROP_RANGE[0] + (CROP_RANGE[1] - CROP_RANGE[0]) * torch.rand(2, generator=gen)).tolist()
    cw, ch = max(2, int(w * fw)), max(2, int(h * fh))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    flip = bool(torch.rand(1, generator=gen) < 0.5)
    shifted = boxes - boxes.new_tensor([x0, y0, x0, y0])
    clipped = torch.stack([shifted[:, 0].clamp(0, cw), shifted[:, 1].clamp(0, ch),
                           shifted[:, 2].clamp(0, cw), shifted[:, 3].clamp(0, ch)], 1)
    if bool((_area(clipped) >= KEEP_FRACTION * _area(boxes)).all()):
        image, boxes = image[:, y0:y0 + ch, x0:x0 + cw], clipped
    if flip:
        width = image.shape[-1]
        image = image.flip(-1)
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return image.contiguous(), boxes


def _target(boxes: Tensor) -> dict:
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}


def epoch_batches(images: List[Tensor], boxes: List[Tensor], seed: int, epoch: int, batch_size: int,
                  device: torch.device) -> Iterator[Tuple[List[Tensor], List[dict]]]:
    """Yield one epoch's ``(images, targets)`` batches (lists, as torchvision's detectors take them) on
    ``device``: shuffled and augmented from ``(seed, epoch)`` only; the last incomplete batch is dropped."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(images), generator=gen).tolist()
    for step in range(max(1, len(images) // batch_size)):
        batch_x, batch_y = [], []
        for i in perm[step * batch_size:(step + 1) * batch_size]:
            image, box = training_view(images[i], boxes[i], gen)
            batch_x.append(normalize(image.to(device)))
            batch_y.append({k: v.to(device) for k, v in _target(box).items()})
        yield batch_x, batch_y


def fixed_views(images: List[Tensor], boxes: List[Tensor], seed: int) -> Tuple[List[Tensor], List[Tensor]]:
    """One fixed, seeded training view of each image (uint8 images and their boxes): calibration and
    fine-tuning data look like what the BatchNorm statistics were learned from."""
    gen = torch.Generator().manual_seed(seed)
    views = [training_view(image, box, gen) for image, box in zip(images, boxes)]
    return [v[0] for v in views], [v[1] for v in views]
