"""Learning-rate schedules, as per-step multipliers for ``torch.optim.lr_scheduler.LambdaLR``: a fixed warmup +
cosine, and a validation-driven plateau schedule with a stopping rule."""

from __future__ import annotations

import math
from typing import Callable


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class PlateauSchedule:
    """Learning-rate multiplier driven by a validation metric (higher is better), with a stopping rule.

    The multiplier starts at 1 and is multiplied by ``factor`` whenever the metric has not improved on its best
    (by more than ``min_delta``) for ``patience`` epochs in a row; training stops once the best is
    ``stop_patience`` epochs old, but not before ``min_epochs`` epochs (the caller's ``epochs`` is the most).
    A callable object, so that ``torch.optim.lr_scheduler.LambdaLR`` saves and restores its state with the
    scheduler's (``state_dict`` keeps an object's ``__dict__``): a resumed run goes on exactly.
    """

    def __init__(self, *, patience: int = 5, factor: float = 0.5, stop_patience: int = 15, min_epochs: int = 0,
                 min_delta: float = 0.0):
        for name, value, least in (("patience", patience, 1), ("stop_patience", stop_patience, 1),
                                   ("min_epochs", min_epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if not float(min_delta) >= 0.0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience, self.factor, self.stop_patience = patience, float(factor), stop_patience
        self.min_epochs, self.min_delta = min_epochs, float(min_delta)
        self.scale, self.best, self.best_epoch, self.bad_epochs, self.cuts = 1.0, None, 0, 0, 0

    def __call__(self, step: int) -> float:
        return self.scale

    def epoch_end(self, metric: float, epoch: int) -> bool:
        """Take epoch ``epoch``'s (1-based) validation ``metric``; cut the multiplier if due; return whether to stop."""
        if not math.isfinite(metric):
            raise FloatingPointError(f"the validation metric of epoch {epoch} is {metric}: cannot schedule on it")
        if self.best is None or metric > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = float(metric), int(epoch), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.scale *= self.factor
                self.cuts += 1
                self.bad_epochs = 0
        return epoch >= self.min_epochs and epoch - self.best_epoch >= self.stop_patience

    def describe(self, metric: str, epochs: int) -> str:
        """The rule in words, as recorded in the run's hyper-parameters."""
        return (f"plateau on {metric}: lr x{self.factor:g} after {self.patience} epochs without improvement"
                f"{f' (> {self.min_delta:g})' if self.min_delta else ''}, stop when the best {metric} is "
                f"{self.stop_patience} epochs old (not before epoch {self.min_epochs}), at most {epochs} epochs")
