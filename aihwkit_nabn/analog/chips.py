"""Simulated chips: independent programmed copies of an analog model, drifted to any time."""

from __future__ import annotations

import copy
from typing import Any, Dict, Hashable, List, Optional, Union

import torch
from torch import nn

from .._aihwkit.tiles import analog_roots, analog_tiles, has_analog_tiles
from ..bn.layers import is_batchnorm
from ..bn.snapshot import BNSnapshot, snapshot_bn
from ..utils.rng import seeded
from .noise_settings import check_defined_at, supported_times
from .times import check_drift_time


class Chip:
    """One simulated chip: a deep copy of a converted analog model, programmed once with its own seed.

    Programming draws the chip's programming noise and per-device drift exponents (aihwkit's noise
    model in each tile's rpu_config); :meth:`drift_to` then sets the conductances at any time ``t``
    after programming, always from the same programmed state. The same seed gives bit-identical
    weights; different seeds give independent chips. The model passed in is never modified.

    A chip can hold several BatchNorm states (e.g. one calibrated state per drift time) and swap them
    with :meth:`save_bn_state`/:meth:`load_bn_state`; the state it was built with is kept as ``"original"``.
    """

    ORIGINAL = "original"

    def __init__(self, analog_model: nn.Module, seed: int, *, device: Optional[Union[str, torch.device]] = None):
        if not has_analog_tiles(analog_model):
            raise ValueError(
                f"{type(analog_model).__name__} has no aihwkit analog tile: convert it first "
                "(aihwkit_nabn.to_analog or aihwkit's convert_to_analog)"
            )
        self.seed = int(seed)
        self.model = copy.deepcopy(analog_model)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.device = next(iter(self.model.state_dict().values())).device
        self.t: Optional[float] = None
        self.bn_states: Dict[Hashable, BNSnapshot] = {}
        with seeded(self.seed, "program", device=self.device):
            for root in analog_roots(self.model):
                root.program_analog_weights()
        if any(is_batchnorm(m) for m in self.model.modules()):
            self.bn_states[self.ORIGINAL] = snapshot_bn(self.model)
        # the drift times the tiles' noise models are defined at (None: any), found once
        self._times = {(type(t.rpu_config.noise_model).__name__, supported_times(t.rpu_config.noise_model))
                       for _, t in analog_tiles(self.model) if getattr(t.rpu_config, "noise_model", None) is not None}

    def drift_to(self, t: Any) -> "Chip":
        """Set the chip's weights to their state ``t`` seconds after programming; return the chip.

        Drift (and the read noise aihwkit adds with it, and the drift-compensation read-out) is seeded
        by the chip's seed and ``t``, so revisiting a time reproduces the same weights.
        """
        t = check_drift_time(t)
        for model_name, times in self._times:
            check_defined_at(f"the chip's noise model ({model_name})", times, [t])
        self.model.eval()
        with seeded(self.seed, "drift", t, device=self.device):
            for root in analog_roots(self.model):
                root.drift_analog_weights(t)
        self.t = t
        return self

    def save_bn_state(self, key: Optional[Hashable] = None) -> BNSnapshot:
        """Store the model's current BatchNorm state under ``key`` (default: the current drift time)."""
        key = self.t if key is None else key
        self.bn_states[key] = snapshot_bn(self.model)
        return self.bn_states[key]

    def load_bn_state(self, key: Hashable) -> BNSnapshot:
        """Put the BatchNorm state stored under ``key`` into the model (e.g. ``Chip.ORIGINAL``).

        Returns a :class:`BNSnapshot` of the state it replaced: ``restore(chip.model)`` undoes the load.
        """
        if key not in self.bn_states:
            raise KeyError(f"chip (seed {self.seed}) holds no BatchNorm state {key!r}; it has {list(self.bn_states)}")
        undo = snapshot_bn(self.model, self.bn_states[key].layer_names)
        self.bn_states[key].restore(self.model)
        return undo

    def __repr__(self) -> str:
        return f"Chip(seed={self.seed}, t={self.t}, device={self.device}, bn_states={list(self.bn_states)})"


def make_chips(
    analog_model: nn.Module, n: int, *, seed: int = 0, device: Optional[Union[str, torch.device]] = None
) -> List[Chip]:
    """Return ``n`` independent chips of ``analog_model`` with seeds ``seed, seed + 1, ...``."""
    if n < 1:
        raise ValueError(f"number of chips must be >= 1, got {n}")
    return [Chip(analog_model, seed + i, device=device) for i in range(n)]
