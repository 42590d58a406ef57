"""CIFAR-10 loading (archive, torchvision folder or ImageFolder), the decode-once cache, normalisation, subsets.

The project's copy of CIFAR-10 is a JPEG (quality 75) archive,
``cifar10_jpg.tar.gz`` with ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``.
:func:`load_cifar10` also reads torchvision's ``cifar-10-batches-py`` folder and
ImageFolder-style directories. Decoded splits are cached as uint8 tensor files
(:mod:`aihwkit_nabn.utils.cache`) so later runs start in well under a second.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import DataFormatError, DataNotFoundError
from ...utils.cache import cache_path, default_cache_dir, fingerprint, load_or_build
from ...utils.sources import find_source

__all__ = [
    "CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ARCHIVE_NAME",
    "ARCHIVE_SHA256",
    "find_cifar10_source",
    "load_cifar10",
    "normalize",
    "stratified_subset",
    "split_off_val",
    "VAL_SEED",
    "balanced_order",
]

PathLike = Union[str, os.PathLike]

#: CIFAR-10 class names in index order (sorted, identical to torchvision's ``CIFAR10.classes``).
CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

#: Per-channel mean and std of the CIFAR-10 training set (RGB, in [0, 1] units).
CIFAR10_MEAN: Tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

#: The project's CIFAR-10 archive and its sha256 (from ``shared/data/README.md``).
ARCHIVE_NAME = "cifar10_jpg.tar.gz"
ARCHIVE_SHA256 = "dbe98f1ef6acd78c6ece0538b38efc7504f687ae231bbebc0e11a68cae04a13d"

ENV_SOURCE = "AIHWKIT_NABN_CIFAR10"


# Bump when the decoded layout changes, so stale cache files are ignored.
_CACHE_VERSION = 1
_SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


# --------------------------------------------------------------------------- sources

def find_cifar10_source(source: Optional[PathLike] = None) -> Path:
    """Return the CIFAR-10 source to read: ``source``, else ``$AIHWKIT_NABN_CIFAR10``, else a search.

    The search looks for ``../shared/data/cifar10_jpg.tar.gz`` relative to the current
    directory and relative to the repository root (the parent of the package directory).

    Raises:
        DataNotFoundError (a ``FileNotFoundError``): if the given path does not exist or nothing was
            found; the message lists every place that was tried and how to pass a path.
    """
    return find_source("CIFAR-10", ARCHIVE_NAME, ENV_SOURCE, source,
                       hint=", a torchvision 'cifar-10-batches-py' folder or an ImageFolder directory")


def _source_kind(path: Path) -> str:
    """Classify a source as ``'archive'``, ``'torchvision'`` or ``'imagefolder'``."""
    if path.is_file():
        if tarfile.is_tarfile(path):
            return "archive"
        raise DataFormatError(f"{str(path)!r} is a file but not a tar archive")
    if _torchvision_dir(path) is not None:
        return "torchvision"
    return "imagefolder"


def _torchvision_dir(path: Path) -> Optional[Path]:
    """Return the ``cifar-10-batches-py`` folder under or at ``path``, or None."""
    for candidate in (path / "cifar-10-batches-py", path):
        if (candidate / "test_batch").is_file() and (candidate / "data_batch_1").is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- decoding

def _decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode one encoded image into a uint8 HWC RGB array, checking it is 32x32."""
    from PIL import Image  # local import: PIL is only needed when decoding

    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.shape != (32, 32, 3):
        raise DataFormatError(f"{name}: expected a 32x32 RGB image, got shape {arr.shape}")
    return arr


def _decode_many(items: Sequence[Tuple[str, bytes]], progress: bool, desc: str) -> torch.Tensor:
    """Decode ``(name, bytes)`` pairs into a uint8 tensor ``[N, 3, 32, 32]`` in the given order."""
    out = np.empty((len(items), 32, 32, 3), dtype=np.uint8)

    def work(i: int) -> None:
        name, data = items[i]
        out[i] = _decode_image(data, name)

    # PIL releases the GIL while decoding, so threads use all cores without pickling overhead.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(work, range(len(items)), chunksize=256), total=len(items),
                      desc=desc, disable=not progress, leave=False):
            pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _labels_from_names(names: Iterable[str], where: str) -> torch.Tensor:
    """Map class folder names to CIFAR-10 indices, with a clear error for unknown names."""
    labels = []
    for name in names:
        if name not in _CLASS_INDEX:
            raise DataFormatError(
                f"{where}: class folder {name!r} is not a CIFAR-10 class ({', '.join(CLASSES)})"
            )
        labels.append(_CLASS_INDEX[name])
    return torch.tensor(labels, dtype=torch.int64)


def _decode_archive(path: Path, split: str, progress: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read ``<split>/<class>/<file>`` members of a tar(.gz) archive without extracting it."""
    members: Dict[str, bytes] = {}
    # Stream the archive once (gzip cannot seek backwards cheaply) and keep this split's bytes.
    with tarfile.open(path, mode="r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.replace("\\", "/").split("/")
            if len(parts) < 3 or parts[-3] != split:
                continue
            if not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
                continue
            fobj = tar.extractfile(member)
            if fobj is not None:
                members[member.name] = fobj.read()
    if not members:
        raise DataFormatError(f"archive {str(path)!r} has no '{split}/<class>/<image>' members")
    names = sorted(members)
    labels = _labels_from_names((n.replace("\\", "/").split("/")[-2] for n in names), str(path))
    images = _decode_many([(n, members[n]) for n in names], progress, f"decode {split}")
    return images, labels


def _decode_imagefolder(path: Path, split: str, progress: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read ``<root>/<split>/<class>/*`` or, if there is no split folder, ``<root>/<class>/*``."""
    root = path / split if (path / split).is_dir() else path
    files: List[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files.extend(sorted(f for f in class_dir.iterdir()
                            if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES))
    if not files:
        raise DataNotFoundError(
            f"no images found in {str(root)!r}; expected <root>/<split>/<class>/*.jpg|png "
            "or <root>/<class>/*.jpg|png"
        )
    labels = _labels_from_names((f.parent.name for f in files), str(root))
    images = _decode_many([(str(f), f.read_bytes()) for f in files], progress, f"decode {split}")
    return images, labels


def _decode_torchvision(path: Path, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read torchvision's ``cifar-10-batches-py`` pickles (same order as ``torchvision.datasets.CIFAR10``).

    These pickles are the official CIFAR-10 distribution format and contain only
    numpy arrays and lists; they are read only when the user points at such a folder.
    """
    folder = _torchvision_dir(path)
    assert folder is not None
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    images = torch.from_numpy(np.concatenate(data)).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64)


def _decode(path: Path, kind: str, split: str, progress: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode one split of a source of the given kind (no caching)."""
    if kind == "archive":
        return _decode_archive(path, split, progress)
    if kind == "torchvision":
        return _decode_torchvision(path, split)
    return _decode_imagefolder(path, split, progress)


# --------------------------------------------------------------------------- loading

def load_cifar10(
    split: str,
    source: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    *,
    use_cache: bool = True,
    progress: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one CIFAR-10 split as tensors.

    Args:
        split: ``"train"`` or ``"test"``.
        source: the ``cifar10_jpg.tar.gz`` archive, a torchvision ``CIFAR10`` root (with
            ``cifar-10-batches-py``) or an ImageFolder directory (``<root>/<split>/<class>/*``
            or ``<root>/<class>/*``). Default: see :func:`find_cifar10_source`.
        cache_dir: where decoded splits are cached. Default: see
            :func:`~aihwkit_nabn.utils.cache.default_cache_dir`.
        use_cache: read and write the cache (keyed by the source's path, size and mtime).
        progress: show a progress bar while decoding.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` RGB and int64 ``[N]`` class indices
        (index = position in the sorted class names :data:`CLASSES`). Image files are
        ordered by sorted path, so the order is deterministic.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    path = find_cifar10_source(source)
    kind = _source_kind(path)
    entry = None
    if use_cache:
        key = {"v": _CACHE_VERSION, "split": split, **fingerprint(path)}
        entry = cache_path(default_cache_dir(cache_dir), f"cifar10_{split}", key)

    def build() -> Dict[str, object]:
        images, labels = _decode(path, kind, split, progress)
        return {"images": images, "labels": labels, "source": str(path.resolve()), "split": split}

    def valid(blob: Dict[str, object]) -> bool:
        images, labels = blob.get("images"), blob.get("labels")
        return (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
                and labels.dtype == torch.int64 and len(images) == len(labels))

    blob = load_or_build(entry, build, valid)
    return blob["images"], blob["labels"]


# --------------------------------------------------------------------------- tensors -> model inputs

def normalize(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images ``[..., 3, H, W]`` to float32 normalised with :data:`CIFAR10_MEAN`/:data:`CIFAR10_STD`.

    Works on any device; returns a new float32 tensor on the same device.
    """
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(3, 1, 1) * 255.0
    std = torch.tensor(CIFAR10_STD, device=images.device).view(3, 1, 1) * 255.0
    return (images.float() - mean) / std


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Pick ``n`` indices with (as nearly as possible) the same count per class, deterministically.

    Each class gets ``n // C`` samples; the ``n % C`` left over go to the lowest class
    indices. Within a class, samples are drawn by a permutation seeded with ``seed``.

    Returns:
        int64 tensor of ``n`` sorted indices into ``labels``.

    Raises:
        ValueError: if ``n`` is not positive or a class has too few samples.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if n <= 0 or n > len(labels):
        raise ValueError(f"n must be in 1..{len(labels)}, got {n}")
    classes = torch.unique(labels)
    per_class, extra = divmod(n, len(classes))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for i, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        k = per_class + (1 if i < extra else 0)
        if k > len(members):
            raise ValueError(f"class {cls} has {len(members)} samples, {k} requested")
        # Permute every class with the same generator stream: deterministic for a given seed.
        perm = torch.randperm(len(members), generator=generator)
        chosen.append(members[perm[:k]])
    return torch.sort(torch.cat(chosen)).values


#: Seed of the held-out validation split (:func:`split_off_val`), apart from the subsets' seeds.
VAL_SEED = 20_200_703


def split_off_val(labels: torch.Tensor, val_samples: int, seed: int = VAL_SEED) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hold out a validation split from the training split: ``(train_idx, val_idx)``, both sorted.

    ``val_idx`` is :func:`stratified_subset` of ``val_samples`` (the same count per class: 5,000 of
    CIFAR-10's 50,000 training images are 500 per class), drawn with ``seed``; ``train_idx`` is every
    other index. Every choice (epochs, learning rates, steps, calibration view or size) is made on the
    validation images; calibration and fine-tuning draw from the rest only.

    Raises:
        ValueError: ``val_samples`` not in ``1 .. len(labels) - 1`` or more than a class can give.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if not 0 < val_samples < len(labels):
        raise ValueError(f"val_samples must be in 1..{len(labels) - 1}, got {val_samples}")
    val = stratified_subset(labels, val_samples, seed=seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


def balanced_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Return a permutation of ``range(len(labels))`` whose every prefix is as class-balanced as possible.

    Classes take turns (in a seeded random order within each class), so the first ``k`` items hold
    ``k // C`` or ``k // C + 1`` samples of each class. Use it before taking a prefix of data whose
    order follows the classes (the CIFAR-10 archive and :func:`stratified_subset` are sorted): a
    prefix of sorted data holds only the first classes, which biases BatchNorm statistics badly.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    generator = torch.Generator().manual_seed(seed)
    rank = torch.empty(len(labels), dtype=torch.int64)
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        rank[members[torch.randperm(len(members), generator=generator)]] = torch.arange(len(members))
    # sort by (rank within class, class order): one sample of every class, then the next round, ...
    return torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)
