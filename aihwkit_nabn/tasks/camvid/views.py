"""The CamVid training view: random scale, crop and horizontal flip of image and label together, on the device.

One affine sampling grid per image (``torch.nn.functional.affine_grid``) scales by ``s`` in ``[1, 1.5]``,
picks a random ``crop`` window of the scaled image and optionally mirrors it; images are sampled
bilinearly, labels by nearest neighbour (so labels stay exact class indices). A whole batch is one
``grid_sample`` call, with no per-image Python work. Every training-style view (an epoch's batches, the
calibration and fine-tuning views, the HWA range initialisation) draws through :func:`draw_views`.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import normalize

__all__ = ["CROP", "SCALE", "crop_for", "draw_views", "training_view", "epoch_batches", "fixed_view"]

#: Size of a training crop (height, width) and the range of the random scale factor.
CROP: Tuple[int, int] = (176, 224)
SCALE: Tuple[float, float] = (1.0, 1.5)


def crop_for(images: Tensor, crop: Tuple[int, int] = CROP) -> Tuple[int, int]:
    """The training crop for images of this size: :data:`CROP`, or the whole image where it is smaller."""
    return min(crop[0], images.shape[-2]), min(crop[1], images.shape[-1])


def draw_views(n: int, gen: torch.Generator, scale: Tuple[float, float] = SCALE) -> Tensor:
    """Draw the random part of :func:`training_view` for ``n`` images: ``[n, 4]`` (scale, x, y, flip) on the CPU."""
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    offsets = torch.rand(n, 2, generator=gen)  # where the crop window sits, as a fraction of the free room
    flips = (torch.rand(n, generator=gen) < 0.5).float()
    return torch.cat([s[:, None], offsets, flips[:, None]], 1)


def training_view(images: Tensor, labels: Tensor, views: Tensor, crop: Tuple[int, int] = CROP) -> Tuple[Tensor, Tensor]:
    """Apply drawn views to ``images`` (uint8 ``[B, 3, H, W]``) and ``labels`` (``[B, H, W]``) on their device.

    Returns ``(uint8 images [B, 3, *crop], int64 labels [B, *crop])``.
    """
    b, _, h, w = images.shape
    views = views.to(images.device)
    s, ox, oy, flip = views.unbind(1)
    ax = crop[1] / (w * s)  # the crop's half-extent in the input's normalised coordinates
    ay = crop[0] / (h * s)
    tx = (2 * ox - 1) * (1 - ax)
    ty = (2 * oy - 1) * (1 - ay)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = ax * (1 - 2 * flip)
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = ay
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, (b, 3, crop[0], crop[1]), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8), lab[:, 0].long()


def epoch_batches(images: Tensor, labels: Tensor, seed: int, epoch: int, batch_size: int,
                  crop: Tuple[int, int] = CROP) -> Iterator[Tuple[Tensor, Tensor]]:
    """Yield one epoch's ``(x, y)`` training batches on the images' device: shuffled and augmented from
    ``(seed, epoch)`` only (a resumed run sees the same data); ``x`` normalised, ``y`` int64 labels."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(images), generator=gen)
    views = draw_views(len(images), gen)
    for step in range(max(1, len(images) // batch_size)):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        x, y = training_view(images[idx.to(images.device)], labels[idx.to(labels.device)], views[idx],
                             crop_for(images, crop))
        yield normalize(x), y


def fixed_view(images: Tensor, labels: Tensor, seed: int, crop: Tuple[int, int] = CROP) -> Tuple[Tensor, Tensor]:
    """One fixed, seeded training view of each image (uint8 images, int64 labels): calibration and
    fine-tuning data look like what the BatchNorm statistics were learned from."""
    gen = torch.Generator().manual_seed(seed)
    return training_view(images, labels, draw_views(len(images), gen), crop_for(images, crop))
