"""Input ranges of analog tiles from data: aihwkit's ``init_from_data`` before training, and its calibration."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from aihwkit.inference.calibration import InputRangeCalibrationType, calibrate_input_ranges as _aihwkit_calibrate

from ..utils.rng import seeded
from .tiles import analog_tiles

__all__ = ["init_batches_needed", "init_input_ranges", "calibrate_input_ranges"]


def _range_tiles(model: nn.Module) -> list:
    return [t for _, t in analog_tiles(model) if getattr(t, "input_range", None) is not None]


def init_batches_needed(model: nn.Module) -> int:
    """Return how many more batches aihwkit's ``init_from_data`` wants before every input range is initialised."""
    return max([int(t.rpu_config.pre_post.input_range.init_from_data - t.input_range_update_idx.item())
                for t in _range_tiles(model)] + [0])


@torch.no_grad()
def init_input_ranges(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Initialise the input ranges from data with aihwkit's own ``init_from_data`` mechanism.

    aihwkit updates a tile's range from its first ``pre_post.input_range.init_from_data`` training
    batches (moving average of ``init_std_alpha`` x the input std). This runs those batches before
    training, taking model inputs from ``batches`` (read lazily, only as many as needed; they should
    look like training batches): tiles in training mode, every other module (BatchNorm!) in eval mode,
    no gradients. Tiles already initialised (e.g. on resume) are not touched again; afterwards every
    module's flag is ``model.training`` as before.

    Returns:
        the number of batches run (0 if every range was already initialised).
    """
    need = init_batches_needed(model)
    if need == 0:
        return 0
    tiles = _range_tiles(model)
    was_training = model.training
    model.eval()
    for tile in tiles:
        tile.train()
    try:
        for x in islice(batches, need):
            model(x)
    finally:
        model.train(was_training)
    return need


def calibrate_input_ranges(model: nn.Module, batches: Iterable[Tensor], *, seed: int = 0,
                           device: Optional[torch.device] = None) -> None:
    """Give a model that was not trained with input ranges aihwkit's data-calibrated ones (in place).

    aihwkit's ``calibrate_input_ranges`` with ``CACHE_QUANTILE`` over the model inputs of ``batches``.
    Its forward passes draw aihwkit's noise, so they run in a stream seeded by ``seed``: a resumed
    comparison (a new process) must deploy exactly the model the interrupted one deployed.
    """
    with seeded(seed, "input_ranges", device=device):
        _aihwkit_calibrate(model, InputRangeCalibrationType.CACHE_QUANTILE, (((x,), {}) for x in batches))
