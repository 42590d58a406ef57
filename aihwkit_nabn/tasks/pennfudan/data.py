"""Penn-Fudan pedestrians: finding, reading and checking the data, the fixed split, the decode-once cache.

The project's copy is ``pennfudan.tar.gz`` (``../shared/data/``): ``PennFudanPed/PNGImages/<name>.png``
(170 RGB images of different sizes), ``PennFudanPed/PedMasks/<name>_mask.png`` (0 = background, k =
pedestrian k) and PASCAL-style ``Annotation/`` files. Boxes are taken from the instance masks (the tightest
box around each pedestrian's pixels, ``[x0, y0, x1, y1)`` in pixels, as torchvision's detection tutorial
does). Its authors ask that it not be reposted: never ship or commit it; read it from ``../shared/data/``,
``$AIHWKIT_NABN_PENNFUDAN`` or a path the user gives.

The split (:data:`SPLIT_SEED`, :func:`split_names`): the 170 image names, sorted, are permuted with a
generator seeded 0; the first 50 are the test split, the next 20 the validation split (every model choice),
the remaining 100 the training split.
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

__all__ = ["ARCHIVE_NAME", "SPLITS", "SPLIT_SIZES", "SPLIT_SEED", "find_pennfudan_source", "load_pennfudan",
           "split_names", "boxes_from_mask", "normalize"]

PathLike = Union[str, os.PathLike]
ARCHIVE_NAME = "pennfudan.tar.gz"
ENV_SOURCE = "AIHWKIT_NABN_PENNFUDAN"
SPLITS = ("train", "val", "test")
#: Images per split, taken in this order (test, val, train) from the seeded permutation of the sorted names.
SPLIT_SIZES = {"test": 50, "val": 20, "train": 100}
SPLIT_SEED = 0
_CACHE_VERSION = 1


def find_pennfudan_source(source: Optional[PathLike] = None) -> Path:
    """Return the Penn-Fudan source: ``source``, else ``$AIHWKIT_NABN_PENNFUDAN``, else ``../shared/data/``."""
    return find_source("Penn-Fudan", ARCHIVE_NAME, ENV_SOURCE, source, hint=" or its extracted folder")


def split_names(names: List[str], split: str) -> List[str]:
    """The names of ``split`` among all image names (see the module's docstring for the rule)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ordered = sorted(names)
    if len(ordered) < sum(SPLIT_SIZES.values()):
        # a smaller copy (a test's, a subset): the same rule with the sizes scaled to it
        n_test = max(1, round(len(ordered) * SPLIT_SIZES["test"] / 170))
        n_val = max(1, round(len(ordered) * SPLIT_SIZES["val"] / 170))
    else:
        n_test, n_val = SPLIT_SIZES["test"], SPLIT_SIZES["val"]
    perm = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(ordered))}
    lo, hi = bounds[split]
    return sorted(ordered[i] for i in perm[lo:hi])


def boxes_from_mask(mask: np.ndarray, where: str) -> torch.Tensor:
    """The ``[K, 4]`` float boxes ``(x0, y0, x1, y1)`` of the K instances of an instance mask (0 = background).

    Raises :class:`DataFormatError` naming ``where`` for a mask without instances or a degenerate box.
    """
    ids = [int(i) for i in np.unique(mask) if i != 0]
    if not ids:
        raise DataFormatError(f"{where} holds no pedestrian (only background)")
    boxes = []
    for k in ids:
        ys, xs = np.nonzero(mask == k)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise DataFormatError(f"{where}: pedestrian {k} has a degenerate box {[x0, y0, x1, y1]}")
        boxes.append([x0, y0, x1, y1])
    return torch.tensor(boxes, dtype=torch.float32)


class _Reader:
    """Reads ``PennFudanPed/...`` members of the archive, or files of an extracted folder."""

    def __init__(self, path: Path):
        self.path = path
        self.members: Dict[str, bytes] = {}
        self.root: Optional[Path] = None
        if path.is_file():
            if not tarfile.is_tarfile(path):
                raise DataFormatError(f"{str(path)!r} is a file but not a tar archive")
            with tarfile.open(path, mode="r:*") as tar:
                for member in tar:
                    name = member.name.replace("\\", "/")
                    if member.isfile() and ("PNGImages/" in name or "PedMasks/" in name):
                        fobj = tar.extractfile(member)
                        if fobj is not None:
                            self.members[name.split("PennFudanPed/", 1)[-1]] = fobj.read()
        else:
            self.root = path / "PennFudanPed" if (path / "PennFudanPed").is_dir() else path

    def where(self, name: str) -> str:
        return f"{self.path}:PennFudanPed/{name}" if self.root is None else str(self.root / name)

    def images(self) -> List[str]:
        if self.root is None:
            names = [n for n in self.members if n.startswith("PNGImages/") and n.endswith(".png")]
        else:
            names = [f"PNGImages/{p.name}" for p in (self.root / "PNGImages").glob("*.png")] \
                if (self.root / "PNGImages").is_dir() else []
        if not names:
            raise DataNotFoundError(f"{self.where('PNGImages')} holds no .png images")
        return sorted(Path(n).stem for n in names)

    def read(self, name: str) -> bytes:
        if self.root is None:
            if name not in self.members:
                raise DataNotFoundError(f"{self.where(name)} is missing")
            return self.members[name]
        file = self.root / name
        if not file.is_file():
            raise DataNotFoundError(f"{file} is missing")
        return file.read_bytes()


def _decode(data: bytes, where: str, mode: Optional[str]) -> np.ndarray:
    from PIL import Image  # pylint: disable=import-outside-toplevel  # only needed when decoding

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.array(img.convert(mode) if mode else img, dtype=np.uint8)
    except Exception as exc:  # pylint: disable=broad-except
        raise DataFormatError(f"{where} is not a readable image ({type(exc).__name__}: {exc})") from None


def _decode_split(reader: _Reader, split: str, progress: bool) -> Dict[str, object]:
    names = split_names(reader.images(), split)
    images, boxes = [], []
    for name in tqdm(names, desc=f"decode pennfudan {split}", disable=not progress, leave=False):
        image = _decode(reader.read(f"PNGImages/{name}.png"), reader.where(f"PNGImages/{name}.png"), "RGB")
        mask_name = f"PedMasks/{name}_mask.png"
        mask = _decode(reader.read(mask_name), reader.where(mask_name), None)
        if mask.shape != image.shape[:2]:
            raise DataFormatError(f"{reader.where(mask_name)} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                  f"{image.shape[1]}x{image.shape[0]}")
        box = boxes_from_mask(mask, reader.where(mask_name))
        h, w = mask.shape
        if bool((box[:, 0] < 0).any() or (box[:, 1] < 0).any() or (box[:, 2] > w).any() or (box[:, 3] > h).any()):
            raise DataFormatError(f"{reader.where(mask_name)}: a box lies outside the {w}x{h} image")
        images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        boxes.append(box)
    return {"images": images, "boxes": boxes, "names": names, "split": split}


def load_pennfudan(split: str, source: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None, *,
                   use_cache: bool = True, progress: bool = True) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[str]]:
    """Load one split: ``(images, boxes, names)`` -- uint8 ``[3, H, W]`` images of their own sizes and float
    ``[K, 4]`` pedestrian boxes ``(x0, y0, x1, y1)`` per image.

    Every image and mask is checked (readable, the same size, at least one pedestrian, boxes inside the image
    and not degenerate); a problem raises :class:`~aihwkit_nabn.errors.DataFormatError` or
    :class:`~aihwkit_nabn.errors.DataNotFoundError` naming the file, and nothing is cached.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = find_pennfudan_source(source)
    entry = None
    if use_cache:
        entry = cache_path(default_cache_dir(cache_dir), f"pennfudan_{split}",
                           {"v": _CACHE_VERSION, "split": split, **fingerprint(path)})

    def valid(blob: Dict[str, object]) -> bool:
        images, boxes = blob.get("images"), blob.get("boxes")
        return isinstance(images, list) and isinstance(boxes, list) and len(images) == len(boxes) == len(
            blob.get("names", ())) and all(isinstance(t, torch.Tensor) for t in images + boxes)

    blob = load_or_build(entry, lambda: _decode_split(_Reader(path), split, progress), valid)
    return list(blob["images"]), list(blob["boxes"]), list(blob["names"])


def normalize(image: torch.Tensor) -> torch.Tensor:
    """A uint8 image ``[3, H, W]`` as float32 in ``[0, 1]`` (torchvision's detectors normalise inside)."""
    return image.float() / 255.0
