"""Safe, plain checkpoints of registry models.

A checkpoint is a ``torch.save``d dict ``{"format": "aihwkit-nabn/v1", "arch": str,
"state_dict": {name: tensor}, "meta": plain dict}``. It holds only tensors and plain
Python types so that it always loads with ``torch.load(path, weights_only=True)``;
this module never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from aihwkit_nabn.errors import CheckpointError
from aihwkit_nabn.models.resnet_cifar import create_model, list_models

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "atomic_save",
    "load_checkpoint",
    "read_checkpoint",
    "pretrained_path",
    "load_pretrained",
]

PathLike = Union[str, os.PathLike]

CHECKPOINT_FORMAT = "aihwkit-nabn/v1"
_ASSETS = Path(__file__).resolve().parent / "assets"
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``CheckpointError`` if ``obj`` holds anything ``weights_only`` loading would refuse."""
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints may hold only "
        "tensors, str, int, float, bool, None, lists, tuples and dicts (so they load with weights_only=True)"
    )


def _plain(obj: Any) -> Any:
    """Copy ``obj`` turning mapping subclasses (e.g. OrderedDict) into dicts and tuples into lists."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    # Subclasses of plain types (torch.__version__ is a TorchVersion, IntEnum, numpy scalars
    # via float()) are pickled by class, which weights_only loading refuses: store the base type.
    for base in (bool, int, float, str):
        if isinstance(obj, base) and type(obj) is not base:
            return base(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


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


def save_checkpoint(path: PathLike, model: nn.Module, arch: str, meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Save ``model``'s weights as a plain checkpoint (atomic write).

    Tensors are moved to the CPU and made contiguous (a ``channels_last`` model loads
    into a fresh model unchanged).

    Returns:
        the path written.

    Raises:
        CheckpointError: if ``arch`` is not registered or ``meta`` holds non-plain objects.
    """
    if arch not in list_models():
        raise CheckpointError(f"unknown arch {arch!r}; known: {', '.join(list_models())}")
    meta = _plain(dict(meta or {}))
    _check_plain(meta, "meta")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"format": CHECKPOINT_FORMAT, "arch": arch, "state_dict": state, "meta": meta}
    path = Path(path)
    atomic_save(blob, path)
    return path


def _is_pickle_stream(path: Path) -> bool:
    """True if the file starts with a well-formed pickle (a raw pickle or a legacy torch file)."""
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:
        return False


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load and validate a checkpoint dict with ``weights_only=True``, without building a model.

    Returns:
        the dict with keys ``format``, ``arch``, ``state_dict``, ``meta``.

    Raises:
        CheckpointError: missing file, not a torch file, unsafe content, wrong format.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    is_zip = zipfile.is_zipfile(path)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if is_zip or _is_pickle_stream(path):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was refused by torch.load(weights_only=True): it contains "
                "Python objects other than tensors and plain types, so it is unsafe or not a plain "
                "aihwkit-nabn checkpoint. aihwkit-nabn never unpickles arbitrary objects; re-save "
                "the weights with aihwkit_nabn.checkpoints.save_checkpoint. "
                f"(detail: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__})"
            ) from None
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint file") from None
    except Exception as exc:  # zip/pickle garbage, truncated files, empty files ...
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise CheckpointError(
            f"{str(path)!r} is a torch file but not an aihwkit-nabn checkpoint: it has no 'format' "
            f"key (expected format {CHECKPOINT_FORMAT!r}; save with save_checkpoint)"
        )
    if blob["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} has format {blob['format']!r}; this version reads {CHECKPOINT_FORMAT!r}"
        )
    for key in ("arch", "state_dict"):
        if key not in blob:
            raise CheckpointError(f"{str(path)!r} has no {key!r} entry")
    if not isinstance(blob["state_dict"], Mapping):
        raise CheckpointError(f"{str(path)!r}: 'state_dict' is a {type(blob['state_dict']).__name__}, not a dict")
    blob.setdefault("meta", {})
    return blob


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the registry model named in a checkpoint and load its weights strictly.

    Always loads with ``torch.load(..., weights_only=True)``.

    Returns:
        ``(model, meta)``; the model is in eval mode on ``map_location``.

    Raises:
        CheckpointError: for a missing, non-torch, unsafe or wrong-format file, an unknown
            arch, or a state dict that does not match the model (missing/unexpected keys,
            wrong shapes).
    """
    blob = read_checkpoint(path, map_location)
    arch = blob["arch"]
    if arch not in list_models():
        raise CheckpointError(
            f"{str(path)!r}: unknown arch {arch!r}; known: {', '.join(list_models())}"
        )
    state = blob["state_dict"]
    fc_weight = state.get("fc.weight")
    num_classes = int(fc_weight.shape[0]) if isinstance(fc_weight, torch.Tensor) else 10
    model = create_model(arch, num_classes=num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes)}")
        raise CheckpointError(
            f"{str(path)!r}: state dict does not match {arch}: " + " | ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    if map_location is not None:
        model.to(map_location if not callable(map_location) else "cpu")
    model.eval()
    return model, blob["meta"]


def pretrained_path(arch: str) -> Path:
    """Return the path of the shipped pretrained weights: ``aihwkit_nabn/assets/{arch}_cifar10.pt``."""
    return _ASSETS / f"{arch}_cifar10.pt"


def load_pretrained(arch: str, map_location: Any = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Load the shipped CIFAR-10 weights of ``arch``.

    Returns:
        ``(model, meta)`` as :func:`load_checkpoint`.

    Raises:
        CheckpointError: if no weights are shipped for ``arch`` (names the path looked at).
    """
    path = pretrained_path(arch)
    if not path.is_file():
        shipped = sorted(p.name for p in _ASSETS.glob("*_cifar10.pt")) if _ASSETS.is_dir() else []
        raise CheckpointError(
            f"no pretrained weights for {arch!r}: {str(path)!r} is not shipped "
            f"(shipped: {', '.join(shipped) or 'none'}). Train one with "
            "aihwkit_nabn.training.train_baseline(arch, epochs=..., out_path=...)"
        )
    return load_checkpoint(path, map_location)
