"""CamVid (SegNet split, 240x180): finding, reading and checking it, the decode-once cache, normalisation.

The project's copy is ``camvid_240x180.tar.gz`` (``../shared/data/``): ``camvid/{train,val,test}/*.png``
RGB images, ``camvid/{train,val,test}annot/*.png`` labels (0-10 for the 11 classes, 11 = void), and
``camvid/{split}.txt`` listing ``image label`` pairs. :func:`load_camvid` also reads an extracted folder
of the same layout. Its licence is non-commercial (CC BY-NC 4.0): never ship or commit it; read it from
``../shared/data/``, ``$AIHWKIT_NABN_CAMVID`` or a path the user gives.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import DataFormatError, DataNotFoundError
from ...utils.cache import cache_path, default_cache_dir, fingerprint, load_or_build
from ...utils.sources import find_source

__all__ = ["CLASSES", "COLOURS", "VOID", "SPLITS", "CAMVID_MEAN", "CAMVID_STD", "ARCHIVE_NAME", "find_camvid_source",
           "load_camvid", "normalize"]

PathLike = Union[str, os.PathLike]

#: The 11 CamVid classes of the SegNet split, in label order; label 11 is void (ignored).
CLASSES: Tuple[str, ...] = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                            "pedestrian", "bicyclist")
VOID = 11
#: The CamVid colours of the classes (and of void, last), for figures.
COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0),
)
SPLITS = ("train", "val", "test")
#: Per-channel mean and std over all pixels of the 367 training images (RGB, in [0, 1] units), of this copy.
CAMVID_MEAN: Tuple[float, float, float] = (0.4123, 0.4256, 0.4331)
CAMVID_STD: Tuple[float, float, float] = (0.2993, 0.3035, 0.2996)

ARCHIVE_NAME = "camvid_240x180.tar.gz"
ENV_SOURCE = "AIHWKIT_NABN_CAMVID"
_CACHE_VERSION = 1


def find_camvid_source(source: Optional[PathLike] = None) -> Path:
    """Return the CamVid source to read: ``source``, else ``$AIHWKIT_NABN_CAMVID``, else ``../shared/data/``.

    Raises:
        DataNotFoundError: if the given path does not exist or nothing was found (lists what was tried).
    """
    return find_source("CamVid", ARCHIVE_NAME, ENV_SOURCE, source, hint=" or its extracted folder")


class _Reader:
    """Reads members of the archive (or files of an extracted folder) by their path below ``camvid/``."""

    def __init__(self, path: Path):
        self.path = path
        self.members: Dict[str, bytes] = {}
        if path.is_file():
            if not tarfile.is_tarfile(path):
                raise DataFormatError(f"{str(path)!r} is a file but not a tar archive")
            with tarfile.open(path, mode="r:*") as tar:
                for member in tar:
                    if member.isfile():
                        name = member.name.replace("\\", "/")
                        name = name.split("camvid/", 1)[1] if "camvid/" in name else name
                        fobj = tar.extractfile(member)
                        if fobj is not None:
                            self.members[name] = fobj.read()
            self.root: Optional[Path] = None
        else:
            self.root = path / "camvid" if (path / "camvid").is_dir() else path

    def where(self, name: str) -> str:
        return f"{self.path}:camvid/{name}" if self.root is None else str(self.root / name)

    def read(self, name: str) -> bytes:
        if self.root is None:
            if name not in self.members:
                raise DataNotFoundError(f"{self.where(name)} is missing")
            return self.members[name]
        file = self.root / name
        if not file.is_file():
            raise DataNotFoundError(f"{file} is missing")
        return file.read_bytes()


def _decode_png(data: bytes, where: str, mode: str) -> np.ndarray:
    from PIL import Image  # pylint: disable=import-outside-toplevel  # only needed when decoding

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except Exception as exc:  # pylint: disable=broad-except
        raise DataFormatError(f"{where} is not a readable image ({type(exc).__name__}: {exc})") from None


def _decode_split(reader: _Reader, split: str, progress: bool) -> Dict[str, object]:
    """Decode and check one split: images ``[N, 3, H, W]`` uint8, labels ``[N, H, W]`` uint8 in 0..11."""
    listing = reader.read(f"{split}.txt").decode().split()
    if len(listing) % 2:
        raise DataFormatError(f"{reader.where(split + '.txt')} does not list image/label pairs")
    pairs = list(zip(listing[0::2], listing[1::2]))
    if not pairs:
        raise DataFormatError(f"{reader.where(split + '.txt')} lists no images")
    images, labels, names = [], [], []
    shape = None
    for image_name, label_name in tqdm(pairs, desc=f"decode camvid {split}", disable=not progress, leave=False):
        image = _decode_png(reader.read(image_name), reader.where(image_name), "RGB")
        label = _decode_png(reader.read(label_name), reader.where(label_name), "L")
        if image.shape[:2] != label.shape:
            raise DataFormatError(f"{reader.where(label_name)} is {label.shape[1]}x{label.shape[0]} but its image "
                                  f"{image_name} is {image.shape[1]}x{image.shape[0]}")
        if shape is None:
            shape = label.shape
        elif label.shape != shape:
            raise DataFormatError(f"{reader.where(image_name)} is {image.shape[1]}x{image.shape[0]}, the split's "
                                  f"first image {shape[1]}x{shape[0]}")
        if int(label.max()) > VOID:
            raise DataFormatError(f"{reader.where(label_name)} holds label {int(label.max())}: CamVid labels are "
                                  f"0-10 and {VOID} (void)")
        images.append(image)
        labels.append(label)
        names.append(Path(image_name).stem)
    return {"images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "labels": torch.from_numpy(np.stack(labels)), "names": names, "split": split}


def load_camvid(split: str, source: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None, *,
                use_cache: bool = True, progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Load one CamVid split: ``(images uint8 [N, 3, H, W], labels uint8 [N, H, W], names)``.

    Every image and label is checked (a readable PNG, the same size, labels 0-11); a problem raises
    :class:`~aihwkit_nabn.errors.DataFormatError` or :class:`~aihwkit_nabn.errors.DataNotFoundError` naming
    the file, and nothing is cached. Decoded splits are cached (:mod:`aihwkit_nabn.utils.cache`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = find_camvid_source(source)
    entry = None
    if use_cache:
        entry = cache_path(default_cache_dir(cache_dir), f"camvid_{split}",
                           {"v": _CACHE_VERSION, "split": split, **fingerprint(path)})

    def valid(blob: Dict[str, object]) -> bool:
        images, labels = blob.get("images"), blob.get("labels")
        return (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
                and labels.dtype == torch.uint8 and len(images) == len(labels) == len(blob.get("names", ())))

    blob = load_or_build(entry, lambda: _decode_split(_Reader(path), split, progress), valid)
    return blob["images"], blob["labels"], list(blob["names"])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[..., 3, H, W]`` -> float32 normalised with :data:`CAMVID_MEAN` / :data:`CAMVID_STD`."""
    mean = torch.tensor(CAMVID_MEAN, device=images.device).view(3, 1, 1) * 255.0
    std = torch.tensor(CAMVID_STD, device=images.device).view(3, 1, 1) * 255.0
    return (images.float() - mean) / std
