"""Input ranges of analog tiles from data: aihwkit's ``init_from_data`` before training, and its calibration."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from itertools import islice
from typing import Dict, Iterable, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

import aihwkit.inference.calibration.calibration as _aihwkit_calibration
from aihwkit.inference.calibration import InputRangeCalibrationType, calibrate_input_ranges as _aihwkit_calibrate

from ..utils.rng import seeded
from .tiles import analog_tiles
from .version import aihwkit_supported

__all__ = ["init_batches_needed", "init_input_ranges", "calibrate_input_ranges", "lean_cache_pre_forward"]


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


#: aihwkit 1.1's own hook, which :func:`lean_cache_pre_forward` replaces only during :func:`calibrate_input_ranges`
_STOCK_PRE_FORWARD = _aihwkit_calibration._calibration_pre_forward  # pylint: disable=protected-access


@torch.no_grad()
def lean_cache_pre_forward(mod: nn.Module, input_args: Tuple, calibration_type: InputRangeCalibrationType,
                           cache_key: str, global_cache: Dict[str, Tensor], max_samples: int = 1000,
                           ir_quantile: float = 0.99) -> None:
    """aihwkit 1.1's ``CACHE_QUANTILE`` pre-forward hook, copying only the input rows it keeps.

    aihwkit's hook (``_calibration_pre_forward``) drops a tile input's all-zero rows, copies every other row to
    the host, appends them to the tile's cache and keeps ``max_samples`` rows of it chosen by one ``randperm`` over
    the cache and the new rows. For a convolution the rows are every output position of every image: 128 CamVid
    images at 240x180 are 5.5 million rows, several GiB copied (and held) three times per layer to keep 1,000. This
    hook makes the same ``randperm`` draw (same length, same generator) and gathers only the chosen new rows, on the
    input's device; the cache it leaves is aihwkit's, row for row and bit for bit (``tests/test_input_ranges.py``).
    Every other calibration type goes to aihwkit's hook. Returns nothing; updates ``global_cache[cache_key]``.
    """
    if calibration_type != InputRangeCalibrationType.CACHE_QUANTILE:
        _STOCK_PRE_FORWARD(mod, input_args, calibration_type, cache_key, global_cache, max_samples, ir_quantile)
        return
    x_input = input_args[0]
    x_input = x_input.reshape(-1, x_input.size(-1))
    kept = (~(x_input == 0.0).all(-1)).nonzero().squeeze(1)  # aihwkit's rows: the not-all-zero ones, in order
    cache = global_cache[cache_key]
    old = cache.size(0)
    chosen = torch.randperm(old + kept.numel())[:max_samples]  # aihwkit's draw over cat([cache, rows])
    new = chosen >= old
    rows = x_input[kept[(chosen[new] - old).to(kept.device)]].detach().cpu()
    # the chosen positions of cat([cache, rows]), where rows holds only the chosen new rows in their chosen order
    order = chosen.clone()
    order[new] = old + torch.arange(rows.size(0))
    global_cache[cache_key] = torch.cat([cache, rows])[order]


@contextmanager
def _lean_cache() -> Iterator[None]:
    """Within the block, aihwkit's calibration registers :func:`lean_cache_pre_forward` (aihwkit 1.1 only; its
    ``calibrate_input_ranges`` binds the module's hook function when it starts); aihwkit's own hook after."""
    if not aihwkit_supported():
        yield
        return
    _aihwkit_calibration._calibration_pre_forward = lean_cache_pre_forward  # pylint: disable=protected-access
    try:
        yield
    finally:
        _aihwkit_calibration._calibration_pre_forward = _STOCK_PRE_FORWARD  # pylint: disable=protected-access


def calibrate_input_ranges(model: nn.Module, batches: Iterable[Tensor], *, seed: int = 0,
                           device: Optional[torch.device] = None, lean: bool = True) -> None:
    """Give a model that was not trained with input ranges aihwkit's data-calibrated ones (in place).

    aihwkit's ``calibrate_input_ranges`` with ``CACHE_QUANTILE`` over the model inputs of ``batches``.
    Its forward passes draw aihwkit's noise, so they run in a stream seeded by ``seed``: a resumed
    comparison (a new process) must deploy exactly the model the interrupted one deployed. ``lean`` (the
    default; aihwkit 1.1 only) caches the inputs with :func:`lean_cache_pre_forward`: the same ranges, without
    copying every input row to the host; ``lean=False`` runs aihwkit's hook.
    """
    with seeded(seed, "input_ranges", device=device), (_lean_cache() if lean else nullcontext()):
        _aihwkit_calibrate(model, InputRangeCalibrationType.CACHE_QUANTILE, (((x,), {}) for x in batches))
