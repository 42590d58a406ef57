"""Context managers that change module training flags and always put them back."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

from torch import nn


@contextmanager
def preserved_training_flags(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag on exit, whatever happened inside."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def only_train(model: nn.Module, modules: Iterable[nn.Module]) -> Iterator[None]:
    """Put ``model`` in eval mode and only ``modules`` in train mode; restore all flags on exit.

    Analog tiles therefore stay in inference mode (programmed and drifted weights, drift compensation
    applied, no training-time weight noise) while the chosen layers, e.g. BatchNorm, train.
    """
    with preserved_training_flags(model):
        model.eval()
        for module in modules:
            # Set the flag on the layer alone: children of a BN layer (none in torch) keep eval.
            module.training = True
        yield
