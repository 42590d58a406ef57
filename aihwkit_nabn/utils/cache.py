"""Decode once, load fast: a cache of decoded datasets as ``weights_only`` tensor files.

A cache entry is keyed by what it was built from (a source file's resolved path, size and mtime, plus
the caller's own version and options), so a changed source or a new decoder never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from .io import atomic_save

PathLike = Union[str, os.PathLike]

#: Environment variable naming the cache directory.
ENV_CACHE = "AIHWKIT_NABN_CACHE"


def default_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """Return the cache directory: ``cache_dir``, else ``$AIHWKIT_NABN_CACHE``, else ``~/.cache/aihwkit_nabn``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "aihwkit_nabn"


def fingerprint(path: PathLike) -> Dict[str, object]:
    """Identity of a data source for a cache key: resolved path, size and mtime.

    A directory's own mtime does not change when a nested file changes, so for directories the
    count, total size and latest mtime of all files are folded in.
    """
    path = Path(path).resolve()
    if path.is_file():
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    count = size = mtime = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            count += 1
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return {"path": str(path), "files": count, "size": size, "mtime_ns": mtime}


def cache_path(cache_dir: PathLike, stem: str, key: Dict[str, Any]) -> Path:
    """Return ``cache_dir/<stem>_<digest>.pt`` where the digest hashes ``key`` (a JSON-able dict)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{stem}_{digest}.pt"


def load_or_build(path: Optional[Path], build: Callable[[], Dict[str, Any]],
                  valid: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
    """Return the cached dict at ``path`` if it loads and ``valid(blob)``; else ``build()`` it and cache it.

    ``path=None`` disables the cache. A corrupt or invalid entry is rebuilt; a cache directory that
    cannot be written only warns (the data are still returned).
    """
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(blob, dict) and valid(blob):
                return blob
        except Exception:  # pylint: disable=broad-except  # a corrupt cache entry is simply rebuilt
            pass
    blob = build()
    if path is not None:
        try:
            atomic_save(blob, path)
        except OSError as exc:
            warnings.warn(f"could not write the data cache {path}: {exc}")
    return blob
