"""HWA checkpoints: an HWA-trained analog model saved before any programming, rebuilt exactly.

:func:`save_hwa_checkpoint` writes a plain checkpoint (``torch.load(weights_only=True)``): the
digital-equivalent weights as a registry-model state dict (so
:func:`~aihwkit_nabn.training.checkpoints.load_checkpoint` reads it as a digital model too), the learned
input range and output scales of every analog tile, the exact analog tensors, and meta.
:func:`load_hwa_model` rebuilds the analog model from it exactly. The analog layers' digital-equivalent
weights are stored once (compact format v2: recomputed from the analog tensors on loading, bit for bit);
full v1 files load too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from aihwkit.nn.conversion import convert_to_digital
from aihwkit.simulator.configs import TorchInferenceRPUConfig

from .._aihwkit.state import analog_state, load_analog_state
from .._aihwkit.tiles import analog_tiles
from ..analog.convert import to_analog
from ..analog.hwa_preset import TorchHWAPreset
from ..analog.presets import config_fields
from ..errors import CheckpointError
from ..utils.io import atomic_save, check_plain, plain
from .checkpoints import CHECKPOINT_FORMAT, check_model_state, load_checkpoint, load_model_spec, read_checkpoint
from .compact_state import HWA_FORMAT, HWA_FORMAT_FULL, HWA_FORMATS, digital_state_of
from .distributed import is_main
from .registry import MODELS, create_model, list_models

__all__ = ["save_hwa_checkpoint", "load_hwa_model", "hwa_source", "hwa_meta", "HWA_FORMAT", "HWA_FORMATS", "digital_state_of"]

PathLike = Union[str, os.PathLike]


def save_hwa_checkpoint(path: PathLike, analog_model: nn.Module, arch: str,
                        meta: Optional[Dict[str, Any]] = None, *, digital_layers: Iterable[str] = (),
                        rpu_config: Optional[TorchInferenceRPUConfig] = None) -> Path:
    """Save an HWA-trained analog model, unprogrammed, as a plain checkpoint (atomic write).

    The file is a regular aihwkit-nabn checkpoint (``format``, ``arch``, ``state_dict`` = the
    digital-equivalent weights from aihwkit's ``convert_to_digital``, i.e. tile weights times
    mapping and learned output scales, ``meta``) plus an ``hwa`` section: ``tiles`` (per analog
    tile: learned ``input_range`` and ``out_scales``), ``analog_state`` (every tensor of the analog
    model, for an exact rebuild), ``digital_layers``, ``preset`` (class name) and ``rpu_config``
    (its :func:`~aihwkit_nabn.analog.presets.config_fields`; default: the tiles' own configuration).

    Compact form (format ``aihwkit-nabn/hwa/v2``): the analog layers' digital-equivalent weights are not
    stored twice but recomputed on loading from ``analog_state`` (:func:`digital_state_of`), which halves
    the file. It is used only when that recomputation, done here on the CPU, gives the same tensors bit for
    bit (and the tiles use an unmodified ``TorchHWAPreset``, which the rebuild needs); otherwise the full
    ``aihwkit-nabn/hwa/v1`` form is written.

    Raises:
        CheckpointError: unknown ``arch``, a model that has been programmed (its weights are then
            noisy: save before programming), or weights that do not fit ``arch``.
    """
    if arch not in MODELS:
        raise CheckpointError(f"unknown arch {arch!r}; known: {', '.join(list_models())}")
    tiles = analog_tiles(analog_model)
    if not tiles:
        raise CheckpointError("the model has no analog tile: save digital models with save_checkpoint")
    programmed = [n for n, t in tiles if getattr(t, "programmed_weights", None) is not None]
    if programmed:
        raise CheckpointError(f"tiles {programmed[:3]} have been programmed (their weights now hold programming "
                              "noise / drift): save the HWA checkpoint before programming")
    meta = plain(dict(meta or {}))
    if getattr(analog_model, "model_kwargs", None):
        meta.setdefault("model_kwargs", plain(dict(analog_model.model_kwargs)))
    check_plain(meta, "meta")
    digital = convert_to_digital(analog_model).cpu()
    state = {k: v.detach().cpu().contiguous() for k, v in digital.state_dict().items()}
    check_model_state(arch, state, "the model's digital weights", meta.get("model_kwargs"))
    configs = [t.rpu_config for _, t in tiles]
    rpu_config = rpu_config if rpu_config is not None else configs[0]
    hwa = {
        "format": HWA_FORMAT,
        "preset": type(rpu_config).__name__,
        "rpu_config": config_fields(rpu_config),
        "digital_layers": list(digital_layers),
        "tiles": {n: {"input_range": float(t.input_range.detach().reshape(-1)[0])
                      if getattr(t, "input_range", None) is not None else None,
                      "out_scales": t.get_scales().detach().cpu().contiguous() if t.get_scales() is not None else None}
                  for n, t in tiles},
        "analog_state": analog_state(analog_model),
    }
    blob = {"format": CHECKPOINT_FORMAT, "arch": arch, "state_dict": state, "meta": meta, "hwa": hwa}
    blob = _compact(blob, state, meta.get("model_kwargs"))
    check_plain(blob["hwa"], "hwa")
    path = Path(path)
    if is_main():  # under torchrun only rank 0 writes
        atomic_save(blob, path)
    return path


def _compact(blob: Dict[str, Any], state: Dict[str, Any], model_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Return ``blob`` in the compact v2 form if rebuilding the digital weights from the analog state is
    exact, else in the full v1 form."""
    hwa = blob["hwa"]
    if config_fields(TorchHWAPreset()) != hwa["rpu_config"]:
        return {**blob, "hwa": {**hwa, "format": HWA_FORMAT_FULL}}
    # The keys that the analog state does not hold as they are: the analog layers' converted weights.
    derived = sorted(k for k, v in state.items()
                     if k not in hwa["analog_state"] or not torch.equal(hwa["analog_state"][k], v))
    kwargs = {**MODELS.get(blob["arch"]).kwargs_from_state(state), **dict(model_kwargs or {})}
    compact = {**blob, "state_dict": {k: v for k, v in state.items() if k not in derived},
               "hwa": {**hwa, "format": HWA_FORMAT, "derived_keys": derived, "model_kwargs": plain(kwargs)}}
    try:
        rebuilt = digital_state_of(compact, "the checkpoint being saved")
    except CheckpointError:
        rebuilt = None
    if rebuilt is None or set(rebuilt) != set(state) or not all(
            rebuilt[k].dtype == state[k].dtype and torch.equal(rebuilt[k], state[k]) for k in state):
        return {**blob, "hwa": {**hwa, "format": HWA_FORMAT_FULL}}
    return compact


def hwa_source(model: PathLike, out_path: PathLike, hparams: Dict[str, Any]) -> Tuple[nn.Module, Dict[str, Any], str, Path]:
    """What every task's HWA recipe starts from: ``(digital model, its meta, arch, output path)`` for a registry
    name or a checkpoint path ``model``; ``hparams`` gets the log and resume paths beside the output by default."""
    _, digital, source_meta = load_model_spec(model)
    arch = read_checkpoint(model)["arch"] if Path(model).is_file() else str(model)
    out = Path(out_path)
    hparams.setdefault("log_path", str(out) + ".log.jsonl")
    hparams.setdefault("resume_path", str(out) + ".resume.pt")
    return digital, source_meta, arch, out


def hwa_meta(result: Dict[str, Any], source_meta: Dict[str, Any], model: PathLike) -> Dict[str, Any]:
    """The meta entries every HWA checkpoint holds about its run: the source model and its accuracy, the preset,
    the aihwkit version, the input-range fix and the epochs done (and whether the plateau rule stopped the run)
    of a :func:`~.hwa.fit_hwa` ``result``."""
    return {"digital_accuracy": source_meta.get("accuracy"), "source": str(model), "preset": result["preset"],
            "aihwkit_version": result["aihwkit_version"], "input_range_fix": result["input_range_fix"],
            "epochs_done": result["epochs_done"], "stopped": bool(result.get("stopped", False))}


def load_hwa_model(path: PathLike, rpu_config: Optional[TorchInferenceRPUConfig] = None, *,
                   device: Any = None, accelerate: bool = True) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the unprogrammed analog model of an HWA checkpoint exactly (``weights_only`` loading).

    Args:
        path: a checkpoint written by :func:`save_hwa_checkpoint`.
        rpu_config: the configuration to rebuild with; default: a :class:`TorchHWAPreset` when the
            model was trained with an unmodified one (else pass the configuration used). Another
            configuration with the same tile layout is accepted (e.g. without output noise).
        device: where to put the model (default CPU).
        accelerate: accelerate the analog layers (:mod:`aihwkit_nabn._aihwkit.accelerated`).

    Returns:
        ``(analog model in eval mode, meta)``.

    Raises:
        CheckpointError: missing/unsafe file, not an HWA checkpoint, or a configuration that
            does not rebuild the same tiles.
    """
    blob = read_checkpoint(path)
    hwa = blob.get("hwa")
    if not isinstance(hwa, dict) or hwa.get("format") not in HWA_FORMATS:
        raise CheckpointError(f"{str(path)!r} is not an HWA checkpoint (no {HWA_FORMAT!r} 'hwa' section); "
                              "train one with aihwkit_nabn.train_hwa / `aihwkit-nabn hwa`")
    if rpu_config is None:
        saved, default = hwa.get("rpu_config") or {}, config_fields(TorchHWAPreset())
        differ = sorted(k for k in set(saved) | set(default) if saved.get(k) != default.get(k))
        if differ:
            raise CheckpointError(
                f"{str(path)!r} was trained with a {hwa.get('preset')} that differs from TorchHWAPreset() in "
                + ", ".join(f"{k} (saved {saved.get(k)!r})" for k in differ[:8])
                + "; pass that rpu_config to load_hwa_model")
        rpu_config = TorchHWAPreset()
    if hwa["format"] == HWA_FORMAT:
        # every tensor comes from the analog state below: a bare model of the arch is skeleton enough (the
        # digital-equivalent weights need not be rebuilt just to be overwritten)
        digital, meta = create_model(blob["arch"], **dict(hwa.get("model_kwargs") or {})), blob["meta"]
    else:
        digital, meta = load_checkpoint(path)
    model = to_analog(digital, rpu_config, digital_layers=hwa.get("digital_layers", []), accelerate=accelerate)
    load_analog_state(model, hwa["analog_state"], f"HWA checkpoint {str(path)!r}")
    if device is not None:
        model.to(device)
    model.eval()
    return model, meta
