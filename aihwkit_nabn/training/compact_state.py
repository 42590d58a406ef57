"""The digital-equivalent weights of a compact HWA checkpoint, recomputed from its exact analog state.

An HWA checkpoint (:mod:`.hwa_checkpoint`) in the compact format stores the analog layers' weights once, as
the tile tensors of the analog model; the digital-equivalent weights that make it a regular checkpoint too
are recomputed here, bit for bit, so that :func:`~.checkpoints.load_checkpoint` reads both forms.
"""

from __future__ import annotations

from typing import Any, Dict

from aihwkit.nn.conversion import convert_to_digital

from .._aihwkit.state import load_analog_state
from ..analog.convert import to_analog
from ..analog.hwa_preset import TorchHWAPreset
from .registry import create_model

__all__ = ["HWA_FORMAT", "HWA_FORMAT_FULL", "HWA_FORMATS", "digital_state_of"]

HWA_FORMAT_FULL = "aihwkit-nabn/hwa/v1"
HWA_FORMAT = "aihwkit-nabn/hwa/v2"
HWA_FORMATS = (HWA_FORMAT_FULL, HWA_FORMAT)


def digital_state_of(blob: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Return the full digital-equivalent state dict of a checkpoint blob (as read by ``read_checkpoint``):
    its ``state_dict`` as stored, or, for a compact HWA checkpoint (v2), with the analog layers' weights
    recomputed from the exact analog state (aihwkit's ``convert_to_digital`` on the rebuilt model, CPU).

    Raises:
        CheckpointError: a compact checkpoint whose analog state does not rebuild (another layout).
    """
    hwa = blob.get("hwa")
    if not isinstance(hwa, dict) or hwa.get("format") != HWA_FORMAT:
        return blob["state_dict"]
    skeleton = create_model(blob["arch"], **dict(hwa.get("model_kwargs") or {}))
    analog = to_analog(skeleton, TorchHWAPreset(), digital_layers=hwa.get("digital_layers", []), accelerate=False)
    load_analog_state(analog, hwa["analog_state"], where)
    digital = convert_to_digital(analog).cpu()
    rebuilt = {k: v.detach().cpu().contiguous() for k, v in digital.state_dict().items()}
    return {**rebuilt, **blob["state_dict"]}
