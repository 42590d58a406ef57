"""Taking model inputs out of whatever a user's data pipeline yields."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Tuple, Union

import torch

from ..errors import CalibrationDataError

InputFn = Callable[[Any], Any]
TargetFn = Callable[[Any], Any]

#: Keys tried, in order, when a batch is a dict and no ``input_key``/``input_fn`` is given.
DEFAULT_INPUT_KEYS = ("input", "inputs", "image", "images", "x", "pixel_values")
#: Keys tried, in order, when a batch is a dict and no ``target_fn`` is given.
DEFAULT_TARGET_KEYS = ("target", "targets", "label", "labels", "y")


def model_device(model: torch.nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batch_input(batch: Any, input_fn: Optional[InputFn] = None, input_key: Optional[str] = None) -> Any:
    """Return the model input held in ``batch``.

    A tensor is the input itself; a tuple or list is ``(input, target, ...)``; a dict gives
    ``batch[input_key]`` or the first of :data:`DEFAULT_INPUT_KEYS` it has. ``input_fn(batch)``, if
    given, overrides all of this. Raises :class:`CalibrationDataError` naming the type it cannot read.
    """
    if input_fn is not None:
        return input_fn(batch)
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        keys = (input_key,) if input_key is not None else DEFAULT_INPUT_KEYS
        for key in keys:
            if key in batch:
                return batch[key]
        raise CalibrationDataError(
            f"batch is a dict with keys {sorted(map(str, batch))} but none of {list(keys)}; "
            "pass input_key='<key>' or input_fn=lambda batch: ..."
        )
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise CalibrationDataError(
        f"cannot take a model input from a batch of type {type(batch).__name__}: expected a Tensor, "
        "an (input, target) tuple/list or a dict; pass input_fn=lambda batch: ... for other layouts"
    )


def batch_target(batch: Any, target_fn: Optional[TargetFn] = None) -> Any:
    """Return the target held in ``batch``: ``batch[1]`` of a tuple/list, or a dict's target key.

    ``target_fn(batch)``, if given, overrides this. Raises :class:`CalibrationDataError` for a batch
    without a target (e.g. a bare tensor: fine-tuning needs labels).
    """
    if target_fn is not None:
        return target_fn(batch)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        for key in DEFAULT_TARGET_KEYS:
            if key in batch:
                return batch[key]
        raise CalibrationDataError(
            f"batch is a dict with keys {sorted(map(str, batch))} but none of {list(DEFAULT_TARGET_KEYS)}; "
            "pass target_fn=lambda batch: ..."
        )
    raise CalibrationDataError(
        f"cannot take a target from a batch of type {type(batch).__name__}: BatchNorm fine-tuning needs "
        "labeled (input, target) batches, e.g. nb.TensorBatches(x, y) or a DataLoader; "
        "pass target_fn=lambda batch: ... for other layouts"
    )


def input_size(inputs: Any) -> int:
    """Return the number of samples in a model input (the leading dimension, or a list's length)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise CalibrationDataError("a batch input is a 0-d tensor; expected a leading batch dimension")
        return inputs.shape[0]
    if isinstance(inputs, (list, tuple)) or hasattr(inputs, "__len__"):
        return len(inputs)  # a list of samples (e.g. detection images), or an object that knows its size
    raise CalibrationDataError(f"model input of type {type(inputs).__name__} is not a tensor or a list of them")


def take_samples(inputs: Any, n: int) -> Any:
    """Return the first ``n`` samples of a model input."""
    return inputs[:n]


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors of a list/tuple/dict, to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(to_device(x, device) for x in inputs)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    return inputs


def as_batches(data: Union[torch.Tensor, Iterable[Any]], batch_size: int = 128) -> Iterable[Any]:
    """Return ``data`` as an iterable of batches: a plain tensor of samples is split into chunks."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise CalibrationDataError("the calibration tensor holds no samples")
        return data.split(batch_size)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise CalibrationDataError(
            f"calibration data of type {type(data).__name__} is not iterable: pass a DataLoader, "
            "an iterable of batches, or a tensor of samples"
        )
    return data


def class_labels(batch: Any) -> Optional[torch.Tensor]:
    """Return the integer class labels a batch carries (``batch[1]`` or a dict's target key), else ``None``.

    Only integer tensors count (class indices, per sample or per pixel); anything else is not a label.
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        target = batch[1]
    elif isinstance(batch, dict):
        target = next((batch[k] for k in DEFAULT_TARGET_KEYS if k in batch), None)
    else:
        return None
    if isinstance(target, torch.Tensor) and not target.is_floating_point() and not target.is_complex() \
            and target.dtype != torch.bool and target.dim() >= 1:
        return target
    return None


def limited_inputs(
    data: Union[torch.Tensor, Iterable[Any]],
    *,
    num_samples: Optional[int] = None,
    num_batches: Optional[int] = None,
    input_fn: Optional[InputFn] = None,
    input_key: Optional[str] = None,
    batch_size: int = 128,
    labels: bool = False,
) -> Iterator[Tuple[Any, ...]]:
    """Yield ``(inputs, n)`` for each batch until ``num_samples`` samples or ``num_batches`` batches.

    The last batch is cut so that exactly ``num_samples`` samples are used when the data holds that
    many. With ``labels=True`` each item is ``(inputs, n, labels)``, ``labels`` being the batch's
    :func:`class_labels` (cut the same way) or ``None``. Raises :class:`CalibrationDataError` for
    non-positive limits.
    """
    for name, value in (("num_samples", num_samples), ("num_batches", num_batches)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise CalibrationDataError(f"{name} must be a positive integer, got {value!r}")
    seen = 0
    for i, batch in enumerate(as_batches(data, batch_size)):
        if num_batches is not None and i >= num_batches:
            return
        inputs = batch_input(batch, input_fn, input_key)
        target = class_labels(batch) if labels else None
        n = input_size(inputs)
        if num_samples is not None and seen + n > num_samples:
            n = num_samples - seen
            inputs = take_samples(inputs, n)
            target = None if target is None else take_samples(target, n)
        if n == 0:
            continue
        yield (inputs, n, target) if labels else (inputs, n)
        seen += n
        if num_samples is not None and seen >= num_samples:
            return


class TensorBatches:
    """Iterate over ``(inputs, targets)`` batches of in-memory tensors, optionally transformed on the fly.

    Lighter than a ``DataLoader`` for data that already sits in memory (no per-sample indexing): each
    batch is one slice, moved to ``device`` and passed through ``transform`` (e.g. uint8 -> normalised
    float) there. Re-iterable; ``len()`` is the number of batches.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        *,
        batch_size: int = 256,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        device: Optional[Union[str, torch.device]] = None,
    ):
        if targets is not None and len(targets) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.transform, self.device = batch_size, transform, device

    def __len__(self) -> int:
        return (len(self.inputs) + self.batch_size - 1) // self.batch_size

    def head(self, n: int, batch_size: Optional[int] = None) -> "TensorBatches":
        """Return the same kind of batches over the first ``n`` samples only (optionally another batch size)."""
        return TensorBatches(
            self.inputs[:n], None if self.targets is None else self.targets[:n],
            batch_size=self.batch_size if batch_size is None else batch_size,
            transform=self.transform, device=self.device,
        )

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, len(self.inputs), self.batch_size):
            x = self.inputs[start : start + self.batch_size]
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
            if self.transform is not None:
                x = self.transform(x)
            if self.targets is None:
                yield x
            else:
                y = self.targets[start : start + self.batch_size]
                yield x, (y.to(self.device, non_blocking=True) if self.device is not None else y)
