"""The Task interface: everything a sweep, the comparison and the command line need from a task.

A task (CIFAR-10 classification, CamVid segmentation, ...) supplies its data (test metric, unlabeled
calibration batches in the training view, labeled fine-tuning batches), its models (registry names with
shipped checkpoints, or checkpoint files), its metric, its training recipes and its default comparison
config. Everything else -- chips, methods, sweeps, journals, reports, costs -- is shared. Tasks live in
:mod:`aihwkit_nabn.tasks` and register there; nothing below that floor imports a task.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..training.checkpoints import load_model_spec
from ..training.hwa_checkpoint import load_hwa_model
from ..training.registry import list_models
from ..utils.batches import TensorBatches
from ..utils.checks import check_float, check_int
from ..utils.registry import canonical

__all__ = ["Task", "Option", "int_option", "float_option", "check_eval_split", "EVAL_SPLITS"]

PathLike = Union[str, os.PathLike]
Metric = Callable[[nn.Module], float]


@dataclass(frozen=True)
class Option:
    """A task-specific option of a training recipe, offered on the command line as ``--<name with dashes>``.

    ``type`` turns the text into the value and raises ``ValueError``/``ConfigError`` for a bad one, so
    the command line rejects it before any work starts. ``None`` (not given) leaves the recipe's default.
    With ``const`` set, the flag may be given without a value, meaning ``const``.
    """

    name: str
    type: Callable[[str], Any]
    help: str
    metavar: Optional[str] = None
    const: Any = None


EVAL_SPLITS = ("test", "val")


def check_eval_split(split: str) -> str:
    """Return ``split`` if it is one a metric can be evaluated on (``test`` or ``val``), else raise
    :class:`~aihwkit_nabn.errors.ConfigError` naming the choices."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    return split


def int_option(minimum: int) -> Callable[[str], int]:
    """A parser for :class:`Option`: the text as an integer ``>= minimum``, or :class:`ConfigError`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}") from None
        return check_int("", value, minimum)

    return parse


def float_option(positive: bool = False, minimum: Optional[float] = None) -> Callable[[str], float]:
    """A parser for :class:`Option`: the text as a finite number (``> 0`` / ``>= minimum``), or :class:`ConfigError`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"expected a number, got {text!r}") from None
        return check_float("", value, positive=positive, minimum=minimum)

    return parse


def choice_option(*choices: str) -> Callable[[str], str]:
    """A parser for :class:`Option`: the text if it is one of ``choices``, or :class:`ConfigError` naming them."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


class Task(ABC):
    """One task of the comparison. Subclasses set the class attributes and implement the data methods.

    ``source`` is where the task's data are read from (``None``: the task's default search, e.g.
    ``../shared/data/``); every data method reads from it.
    """

    #: Registry name, e.g. ``"cifar10"`` (``aihwkit-nabn reproduce cifar10``).
    name: ClassVar[str] = ""
    #: Human-readable name of the data, recorded in results, e.g. ``"CIFAR-10 (JPEG q75 copy)"``.
    title: ClassVar[str] = ""
    #: Name of the metric the rows report, e.g. ``"top1"``.
    metric_name: ClassVar[str] = ""
    #: The default config of ``aihwkit-nabn reproduce <name>``.
    default_config: ClassVar[Path] = Path()
    #: How calibration batches are drawn (recorded with every sweep), e.g. the training augmentation.
    calib_view: ClassVar[str] = ""
    #: Other calibration views :meth:`calibration_data` accepts as ``view=`` (config ``data.calib_view``), name ->
    #: description; empty: the task has its own view only.
    calib_views: ClassVar[Dict[str, str]] = {}
    #: Options of :meth:`train` and :meth:`train_hwa` beyond the common ones (see the command line).
    train_options: ClassVar[Tuple[Option, ...]] = ()
    hwa_options: ClassVar[Tuple[Option, ...]] = ()

    def __init__(self, source: Optional[PathLike] = None):
        self.source = source

    def check_calib_view(self, view: str, what: str = "calibration view") -> None:
        """Raise :class:`ConfigError` "``what`` 'view': task ... has the views [...]" unless ``view`` is one of
        :attr:`calib_views`."""
        if view not in self.calib_views:
            raise ConfigError(f"{what} {view!r}: task {self.name} has "
                              + (f"the views {sorted(self.calib_views)}" if self.calib_views else "its own view only"))

    # -- models

    def model_names(self) -> List[str]:
        """Return the registered models of this task."""
        return list_models(self.name)

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is a registered model of this task (spelled as the registry allows, e.g. ``ResNet-20``)."""
        return isinstance(name, str) and any(canonical(name) == canonical(n) for n in self.model_names())

    def load_model(self, spec: PathLike) -> Tuple[str, nn.Module, Dict[str, Any]]:
        """Return ``(name, digital model, meta)`` for a registry name (shipped weights) or a checkpoint path."""
        return load_model_spec(spec)

    def load_hwa_model(self, path: PathLike, rpu_config: Any) -> Tuple[nn.Module, Dict[str, Any]]:
        """Return ``(unprogrammed analog model, meta)`` of an HWA checkpoint, built with ``rpu_config``."""
        return load_hwa_model(path, rpu_config)

    # -- data

    @abstractmethod
    def test_metric(self, samples: int = 0, *, seed: int = 0, batch_size: int = 500,
                    device: Optional[torch.device] = None, split: str = "test") -> Metric:
        """Return ``metric(model) -> float`` on the test split (``samples``: a fixed stratified subset, 0: all).

        ``split="val"`` evaluates on the validation split instead (where choices are made; see
        :func:`check_eval_split`). The metric has ``name`` (the row's metric) and is evaluated with the
        model in eval mode.
        """

    def with_val_split(self, samples: int) -> "Task":
        """Return a copy of this task whose training split holds ``samples`` fewer images, held out as its
        ``val`` split (calibration and fine-tuning then draw from the rest only).

        Raises:
            ConfigError: the task has a validation split of its own (CamVid, Penn-Fudan): only tasks
                without one (CIFAR-10) hold one out.
        """
        raise ConfigError(f"task {self.name} has a validation split of its own: data.val_samples is for tasks "
                          "without one (cifar10)")

    @abstractmethod
    def calibration_data(self, samples: int, *, seed: int = 0, batch_size: int = 256,
                         device: Optional[torch.device] = None, balanced: bool = True) -> TensorBatches:
        """Return ``samples`` unlabeled training images as calibration batches, in the training view.

        ``balanced``: order them so that every prefix is class-balanced (calibration takes prefixes);
        otherwise in the order of the fixed subset. Only the training split is ever used.
        """

    @abstractmethod
    def labeled_data(self, samples: int, *, seed: int = 1, batch_size: int = 128,
                     device: Optional[torch.device] = None) -> TensorBatches:
        """Return ``samples`` labeled training images as ``(x, y)`` batches for BN fine-tuning (training view)."""

    #: Whether :meth:`labeled_data` can augment the labeled images anew on every pass (``fresh_views=True``).
    supports_fresh_views: ClassVar[bool] = False

    def bnft_loss(self) -> Optional[Callable[[Any, Any], torch.Tensor]]:
        """Return the loss BN fine-tuning minimises (``None``: cross-entropy on the logits)."""
        return None

    def calibrate_kwargs(self) -> Dict[str, Any]:
        """Options ``calibrate_bn`` needs for this task's batches (e.g. ``input_fn``); default none."""
        return {}

    def finetune_kwargs(self) -> Dict[str, Any]:
        """Options ``finetune_bn`` needs for this task's batches (``input_fn``, ``forward_fn``, ...); default none."""
        return {}

    def input_range_batches(self, calib: Any, samples: int, batch_size: Optional[int] = None) -> Iterable[Any]:
        """Return the model inputs of the first ``samples`` calibration images, for aihwkit's input-range calibration.

        ``calib`` is what :meth:`calibration_data` returned; the default takes its head in batches of ``batch_size``
        (None: 256). The batching is part of the deployment: aihwkit's ``CACHE_QUANTILE`` keeps a random 1,000 rows
        drawn anew at every batch, so other batches give other (equally drawn) ranges.
        """
        return calib.head(samples, batch_size or 256)

    def model_inputs(self, split: str, samples: int, device: Any = None) -> Any:
        """Return the first ``samples`` images of ``split`` as the model takes them, on ``device``: one normalised
        batch (classification, segmentation) or a list of normalised images (detection). For per-layer analyses
        (``examples/reproduce/noise_why.py``) that feed a model directly; the comparison itself uses the batches.
        """
        raise NotImplementedError(f"task {self.name!r} does not give its model inputs directly")

    def sizes(self) -> Dict[str, int]:
        """Return the number of samples of each split the task reads (for checking requested sizes)."""
        return {}

    # -- training recipes (the ``train`` / ``hwa`` commands)

    def train(self, *, arch: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
              progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        """Train a digital model of this task and save its checkpoint; return a summary dict."""
        raise ConfigError(f"task {self.name!r} has no digital training recipe")

    def train_hwa(self, *, model: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
                  progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        """Fine-tune a model of this task hardware-aware and save its HWA checkpoint; return a summary dict."""
        raise ConfigError(f"task {self.name!r} has no hardware-aware training recipe")

    # -- checks

    def check_source(self) -> None:
        """Raise :class:`ConfigError` if ``source`` is given but does not exist (before anything is read)."""
        if self.source is not None and not Path(self.source).expanduser().exists():
            raise ConfigError(f"data source {str(self.source)!r} does not exist")

    def check_sizes(self, **requested: int) -> None:
        """Raise :class:`ConfigError` if a requested number of samples exceeds its split (see :meth:`sizes`).

        Keywords are ``test``/``train`` sample counts; unknown splits are not checked.
        """
        sizes = self.sizes()
        for split, n in requested.items():
            if split in sizes and n > sizes[split]:
                raise ConfigError(f"{n} {split} samples requested but the {self.title} {split} split has {sizes[split]}")
