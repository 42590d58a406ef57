"""Deployment methods compared in a drift sweep: small pluggable objects.

A method turns a chip at drift time ``t`` (or the digital model) into the model that is evaluated,
and says what it cost. The sweep loop only calls :meth:`Method.deploy`, so new methods (BN
fine-tuning, hardware-aware training) plug in without touching it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from ..analog.chips import Chip
from ..analog.compensation import without_drift_compensation
from ..analog.times import check_drift_time
from ..bn.calibrate import calibrate_bn
from ..bn.finetune import finetune_bn
from ..bn.snapshot import BNSnapshot
from ..errors import ConfigError


def describe_value(value: Any) -> str:
    """A stable text for a method setting: a function or class by its qualified name (not its address)."""
    name = getattr(value, "__qualname__", None)
    if callable(value) and name is not None:
        return f"{getattr(value, '__module__', '')}.{name}"
    return repr(value)


@dataclass
class Deployed:
    """What a method hands to the evaluation, and what it cost to get there."""

    model: nn.Module
    unlabeled_samples: int = 0
    labeled_samples: int = 0
    trained_params: int = 0


class Method(ABC):
    """A way to deploy a model on a chip. Subclasses set ``name`` and implement :meth:`deploy`.

    ``source`` names which analog variant of a model the method deploys (``"default"``: the converted
    trained model; a later method can ask for e.g. ``"hwa"``). ``needs_chip = False`` means the
    method ignores chips (the digital reference).
    """

    name: str = "method"
    source: str = "default"
    needs_chip: bool = True

    def named(self, name: Optional[str] = None, source: Optional[str] = None) -> "Method":
        """Return this method renamed and/or reading another analog variant (e.g. ``source="hwa"``)."""
        if name is not None:
            self.name = name
        if source is not None:
            self.source = source
        return self

    def applies_at(self, t: float) -> bool:  # pylint: disable=unused-argument
        """Return whether the method is evaluated at drift time ``t`` (all times, unless overridden)."""
        return True

    @abstractmethod
    @contextmanager
    def deploy(self, chip: Optional[Chip], t: float, digital: nn.Module) -> Iterator[Deployed]:
        """Yield the model to evaluate for ``chip`` at time ``t``; undo any change to the chip on exit."""

    def describe(self) -> Dict[str, Any]:
        """Return the method's settings, recorded with the sweep."""
        return {"name": self.name, "source": self.source, "class": type(self).__name__}


class Digital(Method):
    """The digital (floating-point) model: the accuracy ceiling."""

    name = "digital"
    needs_chip = False

    @contextmanager
    def deploy(self, chip, t, digital):
        yield Deployed(digital)


class AnalogUncompensated(Method):
    """The chip as programmed and drifted, with no drift compensation."""

    name = "analog"

    @contextmanager
    def deploy(self, chip, t, digital):
        with without_drift_compensation(chip.model):
            yield Deployed(chip.model)


class GlobalDriftCompensated(Method):
    """The chip with aihwkit's drift compensation from its rpu_config (GlobalDriftCompensation by default)."""

    name = "gdc"

    @contextmanager
    def deploy(self, chip, t, digital):
        yield Deployed(chip.model)


class NoiseAwareBN(Method):
    """Drift compensation plus :func:`calibrate_bn` on the chip (Tsai et al. 2020).

    By default the chip is calibrated at each evaluated time ``t``. With ``calibrate_at=t_c`` it is
    calibrated once, at ``t_c`` after programming, and that BN state is kept for every later time
    (how long a calibration holds); the method is then evaluated only at times ``t >= t_c``.
    The state calibrated at ``t_c`` is kept on the chip under ``(name, t_c)``; after each evaluation the
    chip's BN state is put back exactly (the undo handle ``calibrate_bn`` returns), so other methods see
    the chip unchanged.
    """

    name = "nabn"

    def __init__(self, calib_data: Union[torch.Tensor, Iterable[Any]], num_samples: Optional[int] = 1024, *,
                 calibrate_at: Optional[float] = None, **calibrate_kwargs: Any):
        self.calib_data = calib_data
        self.num_samples = num_samples
        self.calibrate_at = None if calibrate_at is None else check_drift_time(calibrate_at)
        self.calibrate_kwargs = calibrate_kwargs

    def applies_at(self, t: float) -> bool:
        return self.calibrate_at is None or t >= self.calibrate_at

    def _calibrate(self, chip: Chip) -> Any:
        """Calibrate the chip's BN statistics in place; return the undo handle (``info["samples"]``: samples used)."""
        return calibrate_bn(chip.model, self.calib_data, num_samples=self.num_samples, **self.calibrate_kwargs)

    @contextmanager
    def deploy(self, chip, t, digital):
        if self.calibrate_at is None:
            undo = self._calibrate(chip)
            samples = undo.info["samples"]
        else:
            key = (self.name, self.calibrate_at)
            if key not in chip.bn_states:  # calibrate once per chip, at t_c, and keep that state on the chip
                chip.drift_to(self.calibrate_at)
                before = self._calibrate(chip)
                chip.save_bn_state(key).info["samples"] = before.info["samples"]
                before.restore(chip.model)
                chip.drift_to(t)
            undo = chip.load_bn_state(key)
            samples = chip.bn_states[key].info["samples"]
        try:
            yield Deployed(chip.model, unlabeled_samples=samples)
        finally:
            undo.restore(chip.model)

    def describe(self):
        return {**super().describe(), "num_samples": self.num_samples, "calibrate_at": self.calibrate_at,
                **{k: describe_value(v) for k, v in self.calibrate_kwargs.items()}}


def standard_methods(calib_data: Union[torch.Tensor, Iterable[Any]], num_samples: Optional[int] = 1024) -> list:
    """Return the core comparison: ``digital``, ``analog``, ``gdc`` and ``nabn``."""
    return [Digital(), AnalogUncompensated(), GlobalDriftCompensated(), NoiseAwareBN(calib_data, num_samples)]


class BNFineTune(Method):
    """Drift compensation plus BatchNorm-only fine-tuning on the chip at each time (Bhattacharjee et al. 2023).

    :func:`finetune_bn` with ``train="both"``: the BN statistics are re-estimated from ``calib_data``
    (unlabeled, as :class:`NoiseAwareBN`), then gamma and beta are trained for ``steps`` steps on
    ``labeled_data`` through the chip's own forward pass; all other weights stay frozen. After the
    evaluation the chip's BN state is put back exactly (the undo handle ``finetune_bn`` returns).
    """

    name = "bnft"

    def __init__(
        self,
        calib_data: Union[torch.Tensor, Iterable[Any]],
        labeled_data: Iterable[Any],
        *,
        num_samples: Optional[int] = 1024,
        labeled_samples: Optional[int] = None,
        steps: int = 200,
        lr: float = 1e-3,
        **finetune_kwargs: Any,
    ):
        self.calib_data = calib_data
        self.labeled_data = labeled_data
        self.num_samples = num_samples
        self.labeled_samples = labeled_samples
        self.steps = steps
        self.lr = lr
        self.finetune_kwargs = finetune_kwargs

    def finetune(self, model: nn.Module, **overrides: Any) -> BNSnapshot:
        """Run this method's :func:`finetune_bn` on ``model`` (``overrides``: other ``finetune_bn`` options, e.g.
        ``cuda_graph``); return its undo handle, whose ``info`` has the losses."""
        return finetune_bn(
            model, self.labeled_data, train="both", calib_data=self.calib_data, num_samples=self.num_samples,
            labeled_samples=self.labeled_samples, steps=self.steps, lr=self.lr,
            **{**self.finetune_kwargs, **overrides},
        )

    @contextmanager
    def deploy(self, chip, t, digital):
        snapshot = self.finetune(chip.model)
        try:
            info = snapshot.info
            yield Deployed(chip.model, unlabeled_samples=info["unlabeled_samples"],
                           labeled_samples=info["labeled_samples"], trained_params=info["trained_params"])
        finally:
            snapshot.restore(chip.model)

    def describe(self):
        # launch options are left out, so a journal resumes with them on or off; the run's config records them
        kwargs = {k: describe_value(v) for k, v in self.finetune_kwargs.items() if k not in LAUNCH_KWARGS}
        return {**super().describe(), "num_samples": self.num_samples, "labeled_samples": self.labeled_samples,
                "steps": self.steps, "lr": self.lr, **kwargs}


#: Fine-tuning keyword arguments that choose how the steps are launched, not what they compute (``cuda_graph``:
#: benchmarks/bnft_cuda_graph.py compares the two bit for bit); a method's description and a comparison's
#: "finished" check leave them out.
LAUNCH_KWARGS = frozenset({"cuda_graph"})

#: The method names a sweep or comparison understands, in the comparison's order. ``hwa...`` methods read
#: the model's ``"hwa"`` analog variant (its HWA-trained checkpoint); ``gdc`` on it is called ``hwa``.
METHOD_NAMES = ("digital", "analog", "gdc", "nabn", "bnft", "hwa", "hwa+nabn", "hwa+bnft")
HWA_METHODS = ("hwa", "hwa+nabn", "hwa+bnft")


@dataclass
class MethodData:
    """What methods need besides the chip: unlabeled calibration data and labeled fine-tuning data."""

    calib: Union[torch.Tensor, Iterable[Any], None] = None
    calib_samples: Optional[int] = 1024
    labeled: Optional[Iterable[Any]] = None
    labeled_samples: Optional[int] = None
    bnft_steps: int = 200
    bnft_lr: float = 1e-3
    bnft_loss: Optional[Callable[[Any, Any], torch.Tensor]] = None
    #: Options for ``calibrate_bn`` / ``finetune_bn`` the task needs (e.g. ``input_fn`` for lists of images).
    calibrate_kwargs: Dict[str, Any] = field(default_factory=dict)
    finetune_kwargs: Dict[str, Any] = field(default_factory=dict)


def check_method_names(names: Sequence[str], allowed: Sequence[str] = METHOD_NAMES) -> List[str]:
    """Return ``names`` as a list; raise :class:`ConfigError` naming the unknown or repeated ones."""
    names = list(names)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; choose from {list(allowed)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"methods {repeated} are given more than once")
    if not names:
        raise ConfigError(f"no method given; choose from {list(allowed)}")
    return names


def build_method(name: str, data: MethodData) -> Method:
    """Return a fresh :class:`Method` for a name of :data:`METHOD_NAMES` (the one method factory)."""
    check_method_names([name])
    source = "hwa" if name in HWA_METHODS else "default"
    base = name.split("+")[-1]
    if base == "digital":
        return Digital()
    if base == "analog":
        return AnalogUncompensated()
    if base in ("gdc", "hwa"):
        return GlobalDriftCompensated().named(name, source)
    if data.calib is None:
        raise ConfigError(f"method {name!r} needs calibration data")
    if base == "nabn":
        return NoiseAwareBN(data.calib, num_samples=data.calib_samples, **data.calibrate_kwargs).named(name, source)
    if data.labeled is None:
        raise ConfigError(f"method {name!r} needs labeled fine-tuning data")
    extra = {} if data.bnft_loss is None else {"loss_fn": data.bnft_loss}
    return BNFineTune(data.calib, data.labeled, num_samples=data.calib_samples, labeled_samples=data.labeled_samples,
                      steps=data.bnft_steps, lr=data.bnft_lr, **extra, **data.finetune_kwargs).named(name, source)


def build_methods(names: Sequence[str], data: MethodData) -> List[Method]:
    """Return the methods named in ``names``, in that order (see :func:`build_method`)."""
    return [build_method(n, data) for n in check_method_names(names)]
