"""The small CIFAR-10 sample shipped in the package (offline demo and tests), and how it was made.

Run ``python -m aihwkit_nabn.tasks.cifar10.sample make-demo-sample`` to (re)build
``aihwkit_nabn/assets/cifar10_sample.pt``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

from ...errors import DataNotFoundError
from ...utils.io import atomic_save
from .data import ARCHIVE_NAME, ARCHIVE_SHA256, CLASSES, find_cifar10_source, load_cifar10, stratified_subset

__all__ = ["DEMO_SAMPLE_PATH", "make_demo_sample", "load_demo_sample"]

PathLike = Union[str, os.PathLike]
DEMO_SAMPLE_PATH = Path(__file__).resolve().parents[2] / "assets" / "cifar10_sample.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_demo_sample(
    out_path: Optional[PathLike] = None,
    source: Optional[PathLike] = None,
    *,
    n_test: int = 1000,
    n_calib: int = 512,
    seed: int = 0,
    cache_dir: Optional[PathLike] = None,
) -> Path:
    """Write the small CIFAR-10 sample used by the offline demo and the tests.

    It holds ``n_test`` test images (stratified, 100 per class) and ``n_calib`` training
    images (stratified) as uint8 tensors with their labels, plus a ``meta`` dict
    (source name, sha256 of the source archive, the chosen indices). The file contains
    only tensors and plain types, so ``torch.load(..., weights_only=True)`` loads it.

    Returns:
        the path written (default :data:`DEMO_SAMPLE_PATH`).
    """
    out = Path(out_path) if out_path is not None else DEMO_SAMPLE_PATH
    src = find_cifar10_source(source)
    test_x, test_y = load_cifar10("test", src, cache_dir)
    train_x, train_y = load_cifar10("train", src, cache_dir)
    test_idx = stratified_subset(test_y, n_test, seed)
    calib_idx = stratified_subset(train_y, n_calib, seed)
    digest = _sha256(src) if src.is_file() else None
    meta = {
        "dataset": "CIFAR-10 (JPEG q75 copy)",
        "source": src.name,
        "source_sha256": digest,
        "source_sha256_expected": ARCHIVE_SHA256 if src.name == ARCHIVE_NAME else None,
        "seed": seed,
        "test_indices": test_idx,
        "calib_indices": calib_idx,
        "classes": list(CLASSES),
        "note": "test_* from the test split, calib_* from the training split; stratified_subset(labels, n, seed)",
    }
    blob = {
        "test_images": test_x[test_idx].clone(),
        "test_labels": test_y[test_idx].clone(),
        "calib_images": train_x[calib_idx].clone(),
        "calib_labels": train_y[calib_idx].clone(),
        "meta": meta,
    }
    atomic_save(blob, out)
    return out


def load_demo_sample(path: Optional[PathLike] = None) -> Dict[str, object]:
    """Load the shipped CIFAR-10 sample.

    Returns:
        dict with ``test_images`` (uint8 ``[1000, 3, 32, 32]``), ``test_labels`` (int64),
        ``calib_images`` (uint8 ``[512, 3, 32, 32]``), ``calib_labels`` (int64) and ``meta``.
    """
    p = Path(path) if path is not None else DEMO_SAMPLE_PATH
    if not p.is_file():
        raise DataNotFoundError(
            f"demo sample {str(p)!r} not found; build it with "
            "`python -m aihwkit_nabn.tasks.cifar10.sample make-demo-sample`"
        )
    return torch.load(p, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- command line

def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m aihwkit_nabn.tasks.cifar10.sample make-demo-sample [--source S] [--out P]``."""
    parser = argparse.ArgumentParser(prog="python -m aihwkit_nabn.tasks.cifar10.sample")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("make-demo-sample", help="write the shipped CIFAR-10 demo sample")
    demo.add_argument("--source", default=None, help="CIFAR-10 archive or folder")
    demo.add_argument("--out", default=None, help=f"output file (default {DEMO_SAMPLE_PATH})")
    demo.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.command == "make-demo-sample":
        out = make_demo_sample(args.out, args.source, cache_dir=args.cache_dir)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
