"""Safe files: atomic writes, and the plain-data check that keeps every saved file ``weights_only``-loadable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from ..errors import CheckpointError

PathLike = Union[str, os.PathLike]

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place (atomic).

    Readers never see a half-written file, and an interrupted save leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_plain(obj: Any, where: str) -> None:
    """Raise ``CheckpointError`` if ``obj`` holds anything ``weights_only`` loading would refuse."""
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints may hold only "
        "tensors, str, int, float, bool, None, lists, tuples and dicts (so they load with weights_only=True)"
    )


def plain(obj: Any) -> Any:
    """Copy ``obj`` turning mapping subclasses (e.g. OrderedDict) into dicts and tuples into lists."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    # Subclasses of plain types (torch.__version__ is a TorchVersion, IntEnum, numpy scalars
    # via float()) are pickled by class, which weights_only loading refuses: store the base type.
    for base in (bool, int, float, str):
        if isinstance(obj, base) and type(obj) is not base:
            return base(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj
