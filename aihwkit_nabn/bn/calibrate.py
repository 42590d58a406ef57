"""Noise-aware BatchNorm calibration (Tsai et al. 2020; "AdaBS" in Joshi et al. 2020).

The statistics of every selected BatchNorm layer are re-estimated from a few unlabeled samples run
through the model as it is: for an aihwkit model, through its programmed and drifted analog tiles with
drift compensation applied and no training noise. Nothing about the noise model needs to be known.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..errors import CalibrationDataError, CalibrationDataWarning, NonFiniteActivationError
from ..utils.batches import InputFn, limited_inputs, model_device, to_device
from ..utils.modes import only_train
from .layers import LayerSelector, find_bn_layers
from .snapshot import BNSnapshot, snapshot_bn

ForwardFn = Callable[[nn.Module, Any], Any]

__all__ = ["calibrate_bn", "noise_aware_bn", "PooledMoments", "ForwardFn", "LabelCoverage"]


class PooledMoments:
    """Exact per-channel mean and variance of everything a BatchNorm layer sees, over all batches.

    Sums and sums of squares are kept in float64, so the result is the statistic of the pooled samples,
    not an average of per-batch statistics (which would ignore how batch means vary between batches).
    """

    def __init__(self) -> None:
        self.count = 0
        self.total: Optional[torch.Tensor] = None
        self.total_sq: Optional[torch.Tensor] = None

    def add(self, x: torch.Tensor) -> None:
        """Accumulate one BatchNorm input ``x`` of shape ``[N, C, ...]``."""
        x = x.detach().to(torch.float64)
        dims = [d for d in range(x.dim()) if d != 1]
        total, total_sq = x.sum(dims), (x * x).sum(dims)
        if self.total is None:
            self.total, self.total_sq = total, total_sq
        else:
            self.total += total
            self.total_sq += total_sq
        self.count += x.numel() // x.shape[1]

    def all_reduce(self) -> None:
        """Sum the moments over all processes (SyncBatchNorm under torch.distributed)."""
        packed = torch.cat([self.total, self.total_sq, self.total.new_tensor([float(self.count)])])
        dist.all_reduce(packed)
        channels = self.total.numel()
        self.total, self.total_sq = packed[:channels], packed[channels : 2 * channels]
        self.count = int(packed[-1].item())

    def is_finite(self) -> torch.Tensor:
        """Return a 0-d bool tensor: whether every accumulated value is finite."""
        return torch.isfinite(self.total).all() & torch.isfinite(self.total_sq).all()

    def mean_var(self) -> "tuple[torch.Tensor, torch.Tensor]":
        """Return ``(mean, unbiased variance)`` per channel, as BatchNorm stores them."""
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0.0)
        return mean, var * self.count / max(self.count - 1, 1)


class LabelCoverage:
    """Which classes the labels of the calibration batches cover, counted on the device (no host sync).

    The number of classes is ``num_classes`` or, for a classifier or a dense predictor, the size of the
    output's dimension 1 (logits ``[N, C]`` or ``[N, C, H, W]``); labels outside ``0..C-1`` (e.g. an
    ignore index) are not counted.
    """

    def __init__(self, num_classes: Optional[int] = None):
        self.num_classes = num_classes
        self.seen: Optional[torch.Tensor] = None

    def add(self, labels: Optional[torch.Tensor], outputs: Any) -> None:
        """Record the classes in ``labels`` (``None``: the batch has none); ``outputs`` is the model's output."""
        if labels is None:
            return
        if self.num_classes is None:
            out = outputs.get("out") if isinstance(outputs, dict) else outputs
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                return
            self.num_classes = int(out.shape[1])
        if self.seen is None:
            self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=labels.device)
        flat = labels.reshape(-1).to(self.seen.device)
        flat = flat[(flat >= 0) & (flat < self.num_classes)]
        self.seen[flat] = True

    def warn_if_partial(self) -> None:
        """Warn (:class:`CalibrationDataWarning`) when the labels covered only some of the classes."""
        if self.seen is None:
            return
        covered = self.seen.nonzero().flatten().tolist()
        if len(covered) < self.num_classes:
            shown = ", ".join(map(str, covered[:12])) + (", ..." if len(covered) > 12 else "")
            warnings.warn(
                f"the calibration batches carry labels of only {len(covered)} of {self.num_classes} classes "
                f"({shown}): statistics from a class-sorted subset (e.g. an unshuffled ImageFolder loader) are "
                "biased; shuffle the loader (shuffle=True) or calibrate on a class-balanced subset",
                CalibrationDataWarning,
                stacklevel=3,
            )


def _check_finite(moments: Dict[str, PooledMoments], order: List[str], batch_index: int) -> None:
    """Raise :class:`NonFiniteActivationError` naming the first layer (in execution order) that saw NaN/Inf."""
    names = [n for n in order if moments[n].total is not None]
    if not names:
        return
    flags = torch.stack([moments[n].is_finite() for n in names]).cpu()
    if bool(flags.all()):
        return
    first = names[int((~flags).nonzero()[0])]
    raise NonFiniteActivationError(
        f"BatchNorm layer '{first}' received NaN or Inf activations in calibration batch {batch_index}; "
        "its previous statistics were restored (check the input data, the drift time and the analog tile "
        "configuration, e.g. weight_scaling_omega)"
    )


def calibrate_bn(
    model: nn.Module,
    data: Union[torch.Tensor, Iterable[Any]],
    *,
    num_samples: Optional[int] = 1024,
    num_batches: Optional[int] = None,
    layers: LayerSelector = None,
    mode: str = "reset",
    blend_weight: float = 0.5,
    input_fn: Optional[InputFn] = None,
    input_key: Optional[str] = None,
    forward_fn: Optional[ForwardFn] = None,
    batch_size: int = 128,
    move_to_device: bool = True,
    progress: bool = False,
    num_classes: Optional[int] = None,
) -> BNSnapshot:
    """Re-estimate BatchNorm running statistics with the model's own (noisy, drifted) forward pass.

    Every module is put in eval mode except the selected BatchNorm layers, so analog tiles keep their
    programmed and drifted weights and drift compensation, with no training noise. Each selected layer's
    ``running_mean``/``running_var`` becomes the exact mean/unbiased variance of its inputs over all
    calibration samples (``mode="reset"``), or ``(1 - blend_weight) * previous + blend_weight * new``
    (``mode="blend"``). Training flags are restored afterwards; weights are never touched.

    Args:
        model: any ``nn.Module`` with BatchNorm layers, analog (any aihwkit tile) or digital.
        data: a ``DataLoader`` or iterable of batches (tensors, ``(x, y, ...)`` tuples or dicts), or a
            tensor of samples (split into ``batch_size`` chunks). Use training data, never test data.
        num_samples: stop after this many samples (``None``: all of ``data``).
        num_batches: stop after this many batches (``None``: no limit).
        layers: which BN layers to calibrate: ``None`` (all), qualified names, or ``fn(name, module)``.
        mode: ``"reset"`` (replace the statistics) or ``"blend"`` (mix with the previous ones).
        blend_weight: weight of the new statistics in ``"blend"`` mode, in ``(0, 1]``.
        input_fn / input_key: how to take the input out of a batch (see :func:`batches.batch_input`).
        forward_fn: ``fn(model, inputs)`` to call the model, for models that take more than one tensor.
        move_to_device: move inputs to the model's device first.
        progress: show a progress bar.
        num_classes: number of classes, for the check below (default: the output's dimension 1).

    Batches that carry integer labels (``(x, y)`` tuples, dicts with a target key) are checked: if
    their labels cover only some of the classes, a :class:`~aihwkit_nabn.errors.CalibrationDataWarning`
    says so (a class-sorted loader gives biased statistics); the labels are not used otherwise.

    Returns:
        A :class:`BNSnapshot` of the statistics before calibration; ``restore_bn(model, snapshot)``
        puts them back exactly. ``snapshot.info`` records the samples and batches used.

    Raises:
        NoBatchNormError, BatchNormConfigError: nothing to calibrate.
        CalibrationDataError: empty data, a batch of one sample, a non-positive limit, an unreadable batch.
        NonFiniteActivationError: a BN layer saw NaN/Inf (names the layer; previous statistics restored).
    """
    if mode not in ("reset", "blend"):
        raise ValueError(f"mode must be 'reset' or 'blend', got {mode!r}")
    if mode == "blend" and not 0.0 < blend_weight <= 1.0:
        raise ValueError(f"blend_weight must be in (0, 1], got {blend_weight!r}")
    selected = find_bn_layers(model, layers)
    snapshot = snapshot_bn(model, list(selected))
    moments = {name: PooledMoments() for name in selected}
    order: List[str] = []

    def make_hook(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            if name not in order:
                order.append(name)
            moments[name].add(args[0])

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in selected.items()]
    # momentum 0 keeps BN's own running-average update from touching the statistics mid-way, so
    # "blend" mixes with the true previous values; BN still counts num_batches_tracked per batch.
    for module in selected.values():
        module.momentum = 0.0
    device = model_device(model)
    coverage = LabelCoverage(num_classes)
    samples = batches = 0
    try:
        with only_train(model, selected.values()), torch.no_grad():
            stream = limited_inputs(
                data,
                num_samples=num_samples,
                num_batches=num_batches,
                input_fn=input_fn,
                input_key=input_key,
                batch_size=batch_size,
                labels=True,
            )
            for inputs, n, labels in tqdm(stream, desc="calibrate_bn", unit="batch", disable=not progress,
                                          leave=False):
                if n < 2:
                    raise CalibrationDataError(
                        f"calibration batch {batches} holds a single sample: BatchNorm in training mode "
                        "needs at least 2 samples per batch (use a larger batch_size, or drop_last=True, "
                        "or a num_samples that does not leave a remainder of 1)"
                    )
                if move_to_device:
                    inputs = to_device(inputs, device)
                outputs = model(inputs) if forward_fn is None else forward_fn(model, inputs)
                coverage.add(labels, outputs)
                del outputs
                _check_finite(moments, order, batches)
                samples += n
                batches += 1
        if batches == 0:
            raise CalibrationDataError("the calibration data yielded no samples")
        unseen = [n for n in selected if moments[n].total is None]
        if unseen:
            raise CalibrationDataError(f"BatchNorm layers {unseen} were never called during calibration")
        _write_statistics(selected, moments, mode, blend_weight)
    except BaseException:
        snapshot.restore(model)
        raise
    finally:
        for handle in handles:
            handle.remove()
        for name, module in selected.items():
            module.momentum = snapshot.momentum[name]
    snapshot.info = {"samples": samples, "batches": batches, "layers": list(selected), "mode": mode}
    coverage.warn_if_partial()
    return snapshot


def _write_statistics(
    selected: Dict[str, nn.Module], moments: Dict[str, PooledMoments], mode: str, blend_weight: float
) -> None:
    """Store the pooled statistics into each BN layer (replacing or blending)."""
    distributed = dist.is_available() and dist.is_initialized()
    with torch.no_grad():
        for name, module in selected.items():
            stats = moments[name]
            if distributed and isinstance(module, nn.SyncBatchNorm):
                stats.all_reduce()
            mean, var = stats.mean_var()
            mean = mean.to(module.running_mean.dtype)
            var = var.to(module.running_var.dtype)
            if mode == "blend":
                mean = torch.lerp(module.running_mean, mean, blend_weight)
                var = torch.lerp(module.running_var, var, blend_weight)
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)


@contextmanager
def noise_aware_bn(model: nn.Module, data: Union[torch.Tensor, Iterable[Any]], **kwargs: Any) -> Iterator[BNSnapshot]:
    """Calibrate BatchNorm statistics (see :func:`calibrate_bn`) for the ``with`` block, then restore them."""
    snapshot = calibrate_bn(model, data, **kwargs)
    try:
        yield snapshot
    finally:
        snapshot.restore(model)
