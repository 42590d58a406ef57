"""One work unit of a sweep: one model on one chip index, every source, drift time and method of it.

A unit programs each chip it needs once (seed ``seed + chip``, one per method ``source``), drifts it to each time
in turn and evaluates every method not yet done, each under a random stream seeded by (chip seed, time,
method), so its rows do not depend on which process runs it or what ran before. :func:`~.sweep.run_sweep`
runs units in this process or as Ray tasks (:mod:`.ray_sweep`) and journals what they yield.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from ..analog.chips import Chip
from ..analog.times import time_label
from ..utils.devices import synchronize
from ..utils.rng import seeded
from .methods import Method

__all__ = ["SweepModel", "sweep_unit", "is_done", "metric_names"]


@dataclass
class SweepModel:
    """A model in a sweep: its digital form and its converted (unprogrammed) analog variants by source."""

    digital: nn.Module
    analog: Dict[str, nn.Module] = field(default_factory=dict)


def is_done(done: Set[Tuple], names: Sequence[str], model_name: str, method_name: str, t: float, chip: int) -> bool:
    """Whether the journal keys ``done`` hold every metric value of one evaluation."""
    return all((model_name, method_name, t, chip, name) in done for name in names)


def sweep_unit(model_name: str, spec: SweepModel, methods: Sequence[Method], metric: Callable[[nn.Module], Any],
               chip: int, times: Sequence[float], *, seed: int, device: torch.device, done: Set[Tuple],
               once: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]]) -> Iterator[Dict[str, Dict[str, Any]]]:
    """Yield, for each evaluation of the unit (model ``model_name``, chip index ``chip``) not in ``done``
    (journal keys), its rows by metric name, complete (model, time label, chip, metric, device).

    ``once``: the rows of chip-independent methods (the digital reference) already measured for a model; a
    unit measures such a method only if it is absent, and fills it in (its other rows repeat that value
    with zero seconds).
    """
    names = metric_names(metric)
    digital = copy.deepcopy(spec.digital).to(device).eval()  # the caller's model stays put
    chips: Dict[str, Chip] = {}
    for t in times:
        for method in methods:
            if not method.applies_at(t) or is_done(done, names, model_name, method.name, t, chip):
                continue
            board = None
            if method.needs_chip:
                if method.source not in chips:
                    chips[method.source] = Chip(spec.analog[method.source], seed + chip, device=device)
                board = chips[method.source]
                if board.t != t:
                    board.drift_to(t)
            cached = once.get((model_name, method.name)) if not method.needs_chip else None
            if cached is not None and set(cached) >= set(names):
                rows = {name: _repeat(cached[name], t, seed + chip) for name in names}
            else:
                rows = _evaluate(method, board, t, digital, metric, seed + chip, device)
                if not method.needs_chip:
                    once[(model_name, method.name)] = rows
            for name in names:
                rows[name] = {**rows[name], "model": model_name, "time_label": time_label(t), "chip": chip,
                              "metric": name, "device": str(device)}
            yield rows


def metric_names(metric: Any) -> List[str]:
    """The names of the values a metric returns: its ``names`` (it returns ``{name: value}``) or its ``name``."""
    names = getattr(metric, "names", None)
    return list(names) if names else [getattr(metric, "name", "metric")]


def _repeat(measured: Mapping[str, Any], t: float, chip_seed: int) -> Dict[str, Any]:
    """Return the row of a chip-independent method at ``t`` from its one measured row (zero seconds)."""
    keep = ("method", "source", "value", "unlabeled_samples", "labeled_samples", "trained_params")
    return {**{k: measured[k] for k in keep}, "time_s": t, "chip_seed": chip_seed, "method_seconds": 0.0,
            "eval_seconds": 0.0, "peak_mem_mib": None}


def _evaluate(method: Method, chip: Optional[Chip], t: float, digital: nn.Module,
              metric: Callable[[nn.Module], Any], chip_seed: int, device: torch.device) -> Dict[str, Dict[str, Any]]:
    """Deploy with ``method`` and evaluate once; return ``{metric name: row's measured fields}``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with seeded(chip_seed, "evaluate", t, method.name, device=device):
        synchronize(device)
        start = time.perf_counter()
        with method.deploy(chip, t, digital) as deployed:
            synchronize(device)
            ready = time.perf_counter()
            result = metric(deployed.model)
            synchronize(device)
            end = time.perf_counter()
    names = metric_names(metric)
    values = {n: float(result[n]) for n in names} if getattr(metric, "names", None) else {names[0]: float(result)}
    fields = {
        "method": method.name, "source": method.source if method.needs_chip else "digital", "time_s": t,
        "chip_seed": chip_seed, "method_seconds": round(ready - start, 4),
        "eval_seconds": round(end - ready, 4), "unlabeled_samples": deployed.unlabeled_samples,
        "labeled_samples": deployed.labeled_samples, "trained_params": deployed.trained_params,
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
    }
    return {name: {**fields, "value": value} for name, value in values.items()}
