"""Datasets: CIFAR-10 loading, caching, normalisation, subsets and the shipped demo sample.

Names are loaded lazily from :mod:`aihwkit_nabn.data.cifar10`, so that
``python -m aihwkit_nabn.data.cifar10`` does not import the module twice.
"""

from importlib import import_module
from typing import Any

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CLASSES",
    "TensorImageDataset",
    "find_cifar10_source",
    "load_cifar10",
    "load_demo_sample",
    "make_demo_sample",
    "make_loader",
    "normalize",
    "stratified_subset",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("aihwkit_nabn.data.cifar10"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
