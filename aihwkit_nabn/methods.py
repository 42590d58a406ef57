"""Deployment methods compared in a drift sweep: small pluggable objects.

A method turns a chip at drift time ``t`` (or the digital model) into the model that is evaluated,
and says what it cost. The sweep loop only calls :meth:`Method.deploy`, so new methods (BN
fine-tuning, hardware-aware training) plug in without touching it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Optional, Union

import torch
from torch import nn

from .calibration import calibrate_bn
from .batchnorm import snapshot_bn
from .chips import Chip, check_drift_time
from .compensation import without_drift_compensation


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
    The calibrated state is stored on the chip under ``(name, t or t_c)``; the chip's previous BN state
    is restored after the evaluation so other methods see the chip unchanged.
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

    def _calibrate(self, chip: Chip) -> int:
        """Calibrate the chip's BN statistics in place (the caller restores them); return the samples used."""
        return calibrate_bn(chip.model, self.calib_data, num_samples=self.num_samples, **self.calibrate_kwargs).info["samples"]

    @contextmanager
    def deploy(self, chip, t, digital):
        previous = snapshot_bn(chip.model)
        try:
            if self.calibrate_at is None:
                samples = self._calibrate(chip)
                chip.save_bn_state((self.name, t)).info["samples"] = samples
            else:
                key = (self.name, self.calibrate_at)
                if key not in chip.bn_states:  # calibrate once per chip, at t_c
                    chip.drift_to(self.calibrate_at)
                    samples = self._calibrate(chip)
                    chip.save_bn_state(key).info["samples"] = samples
                    chip.drift_to(t)
                chip.load_bn_state(key)
                samples = chip.bn_states[key].info["samples"]
            yield Deployed(chip.model, unlabeled_samples=samples)
        finally:
            previous.restore(chip.model)

    def describe(self):
        return {**super().describe(), "num_samples": self.num_samples, "calibrate_at": self.calibrate_at,
                **{k: repr(v) for k, v in self.calibrate_kwargs.items()}}


def standard_methods(calib_data: Union[torch.Tensor, Iterable[Any]], num_samples: Optional[int] = 1024) -> list:
    """Return the core comparison: ``digital``, ``analog``, ``gdc`` and ``nabn``."""
    return [Digital(), AnalogUncompensated(), GlobalDriftCompensated(), NoiseAwareBN(calib_data, num_samples)]


class BNFineTune(Method):
    """Drift compensation plus BatchNorm-only fine-tuning on the chip at each time (Bhattacharjee et al. 2023).

    :func:`finetune_bn` with ``train="both"``: the BN statistics are re-estimated from ``calib_data``
    (unlabeled, as :class:`NoiseAwareBN`), then gamma and beta are trained for ``steps`` steps on
    ``labeled_data`` through the chip's own forward pass; all other weights stay frozen. The result is
    stored on the chip under ``("bnft", t)``; the chip's previous BN state is restored after the evaluation.
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

    @contextmanager
    def deploy(self, chip, t, digital):
        from .finetune import finetune_bn  # pylint: disable=import-outside-toplevel

        snapshot = finetune_bn(
            chip.model, self.labeled_data, train="both", calib_data=self.calib_data, num_samples=self.num_samples,
            labeled_samples=self.labeled_samples, steps=self.steps, lr=self.lr, **self.finetune_kwargs,
        )
        try:
            chip.save_bn_state(("bnft", t))
            info = snapshot.info
            yield Deployed(chip.model, unlabeled_samples=info["unlabeled_samples"],
                           labeled_samples=info["labeled_samples"], trained_params=info["trained_params"])
        finally:
            snapshot.restore(chip.model)

    def describe(self):
        return {**super().describe(), "num_samples": self.num_samples, "labeled_samples": self.labeled_samples,
                "steps": self.steps, "lr": self.lr, **{k: repr(v) for k, v in self.finetune_kwargs.items()}}
