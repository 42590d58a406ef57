"""Metrics for sweeps: callables ``metric(model) -> float`` bound to their evaluation data."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..utils.batches import batch_input, model_device, to_device
from ..utils.modes import preserved_training_flags


class Top1Accuracy:
    """Top-1 accuracy in percent of a classifier on fixed data; ``metric(model) -> float``.

    ``data`` yields ``(inputs, targets)`` batches (a ``DataLoader``, :class:`TensorBatches`, a list).
    The model is evaluated in eval mode (analog tiles in inference mode) and its flags are restored.
    """

    name = "top1"
    higher_is_better = True

    def __init__(
        self,
        data: Iterable[Any],
        *,
        input_fn: Optional[Callable[[Any], Any]] = None,
        target_fn: Optional[Callable[[Any], torch.Tensor]] = None,
        samples: Optional[int] = None,
    ):
        self.data = data
        #: Number of evaluation samples, when known (recorded with sweeps).
        self.samples = samples
        self.input_fn = input_fn
        self.target_fn = target_fn if target_fn is not None else (lambda batch: batch[1])

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        device = model_device(model)
        correct = total = 0
        with preserved_training_flags(model):
            model.eval()
            for batch in self.data:
                inputs = to_device(batch_input(batch, self.input_fn), device)
                targets = self.target_fn(batch).to(device)
                logits = model(inputs)
                correct += (logits.argmax(dim=1) == targets).sum()
                total += targets.numel()
        if total == 0:
            raise ValueError("Top1Accuracy: the evaluation data yielded no samples")
        return 100.0 * float(correct) / total
