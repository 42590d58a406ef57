"""Safe, plain checkpoints of registry models.

A checkpoint is a ``torch.save``d dict ``{"format": "aihwkit-nabn/v1", "arch": str,
"state_dict": {name: tensor}, "meta": plain dict}``. It holds only tensors and plain
Python types so that it always loads with ``torch.load(path, weights_only=True)``;
this module never unpickles arbitrary objects. The model is rebuilt through the
model registry (:mod:`.registry`) from its ``arch`` name.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils.io import atomic_save, check_plain, plain
from .compact_state import digital_state_of
from .distributed import is_main
from .registry import MODELS, create_model, list_models

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "pretrained_path",
    "load_pretrained",
    "load_model_spec",
    "check_model_state",
]

PathLike = Union[str, os.PathLike]

CHECKPOINT_FORMAT = "aihwkit-nabn/v1"


def save_checkpoint(path: PathLike, model: nn.Module, arch: str, meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Save ``model``'s weights as a plain checkpoint (atomic write).

    Tensors are moved to the CPU and made contiguous (a ``channels_last`` model loads
    into a fresh model unchanged). A model's ``model_kwargs`` (the builder arguments its state dict
    cannot tell, e.g. a detector's image sizes) go into ``meta["model_kwargs"]`` and rebuild it so.

    Returns:
        the path written.

    Raises:
        CheckpointError: if ``arch`` is not registered or ``meta`` holds non-plain objects.
    """
    if arch not in MODELS:
        raise CheckpointError(f"unknown arch {arch!r}; known: {', '.join(list_models())}")
    meta = plain(dict(meta or {}))
    if getattr(model, "model_kwargs", None):
        meta.setdefault("model_kwargs", plain(dict(model.model_kwargs)))
    check_plain(meta, "meta")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"format": CHECKPOINT_FORMAT, "arch": arch, "state_dict": state, "meta": meta}
    path = Path(path)
    if is_main():  # under torchrun only rank 0 writes
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


def check_model_state(arch: str, state: Mapping[str, Any], where: str,
                      model_kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Build the registry model ``arch`` for ``state`` and check the keys and shapes match; return the model.

    The builder gets the arguments its registry entry reads from the state dict, then ``model_kwargs``.

    Raises:
        CheckpointError: unknown arch, or missing/unexpected keys or shape mismatches (all named).
    """
    if arch not in MODELS:
        raise CheckpointError(f"{where}: unknown arch {arch!r}; known: {', '.join(list_models())}")
    model = create_model(arch, **{**MODELS.get(arch).kwargs_from_state(state), **dict(model_kwargs or {})})
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
        raise CheckpointError(f"{where}: state dict does not match {arch}: " + " | ".join(parts))
    return model


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
    # A compact HWA checkpoint stores its analog layers' weights once, in the analog state.
    state = digital_state_of(blob, f"HWA checkpoint {str(path)!r}")
    model = check_model_state(blob["arch"], state, repr(str(path)), blob["meta"].get("model_kwargs"))
    model.load_state_dict(state, strict=True)
    if map_location is not None:
        model.to(map_location if not callable(map_location) else "cpu")
    model.eval()
    return model, blob["meta"]


def pretrained_path(arch: str) -> Path:
    """Return the path of the weights shipped for ``arch`` (its registry entry's ``pretrained``).

    Raises:
        CheckpointError: if no weights are shipped for ``arch`` (names the models that have some).
    """
    entry = MODELS.get(arch) if arch in MODELS else None
    if entry is None or entry.pretrained is None or not Path(entry.pretrained).is_file():
        shipped = [n for n in list_models() if MODELS.get(n).pretrained and Path(MODELS.get(n).pretrained).is_file()]
        looked = f" ({str(entry.pretrained)!r} is missing)" if entry is not None and entry.pretrained else ""
        raise CheckpointError(
            f"no pretrained weights for {arch!r}{looked}; shipped: {', '.join(shipped) or 'none'}. "
            "Train one with `aihwkit-nabn train`"
        )
    return Path(entry.pretrained)


def load_pretrained(arch: str, map_location: Any = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Load the shipped weights of ``arch``.

    Returns:
        ``(model, meta)`` as :func:`load_checkpoint`.

    Raises:
        CheckpointError: if no weights are shipped for ``arch`` (names the models that have some).
    """
    return load_checkpoint(pretrained_path(arch), map_location)


def load_model_spec(spec: Union[str, PathLike], map_location: Any = "cpu") -> Tuple[str, nn.Module, Dict[str, Any]]:
    """Return ``(name, model, meta)`` for a checkpoint path or a registry name with shipped weights.

    The name is the checkpoint's ``arch`` (or the file's stem), or the registry name itself.

    Raises:
        CheckpointError: a path that is not a usable checkpoint, or a name that is neither a file nor a
            registered model with shipped weights (names both).
    """
    path = Path(spec)
    if path.is_file():
        model, meta = load_checkpoint(path, map_location)
        return meta.get("arch", path.stem), model, meta
    if str(spec) in MODELS:
        model, meta = load_pretrained(str(spec), map_location)
        return str(spec), model, meta
    raise CheckpointError(f"{str(spec)!r} is neither a checkpoint file nor one of the models {list_models()}")
