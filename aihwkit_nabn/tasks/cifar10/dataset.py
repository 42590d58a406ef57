"""CIFAR-10 images in memory as a torch ``Dataset`` / ``DataLoader`` of normalised ``(image, label)`` pairs."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from .data import normalize as normalize_images

__all__ = ["TensorImageDataset", "make_loader"]


class TensorImageDataset(Dataset):
    """A ``Dataset`` over in-memory uint8 images returning ``(float_image, label)``.

    Args:
        images: uint8 ``[N, 3, H, W]``.
        labels: int64 ``[N]``.
        normalize: apply :func:`normalize`; otherwise images are scaled to ``[0, 1]``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalize: bool = True) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.images)

    def _convert(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_images(images) if self.normalize else images.float() / 255.0

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._convert(self.images[index]), self.labels[index]

    def __getitems__(self, indices: List[int]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        # DataLoader fetches whole batches through this hook: one vectorised conversion
        # per batch instead of one per image.
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self._convert(self.images[idx])
        return list(zip(images.unbind(0), self.labels[idx].unbind(0)))


def make_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    *,
    normalize: bool = True,
    seed: Optional[int] = None,
    drop_last: bool = False,
    num_workers: int = 0,
    **kwargs,
) -> DataLoader:
    """Return a ``DataLoader`` of normalised ``(float_images, labels)`` batches over in-memory tensors.

    ``seed`` fixes the shuffling order; other keyword arguments go to ``DataLoader``.
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        TensorImageDataset(images, labels, normalize=normalize),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        **kwargs,
    )
