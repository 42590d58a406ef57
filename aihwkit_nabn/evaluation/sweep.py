"""Drift-over-time sweep: models x methods x times x independent chips, journaled row by row."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..analog.chips import Chip
from ..analog.times import DEFAULT_TIMES, check_drift_time, time_label
from ..utils.devices import resolve_device, synchronize
from ..utils.rng import seeded
from .journal import RowJournal, read_rows, row_key
from .methods import Method

__all__ = ["SweepModel", "run_sweep", "metric_names", "DEFAULT_TIMES"]

@dataclass
class SweepModel:
    """A model in a sweep: its digital form and its converted (unprogrammed) analog variants by source."""

    digital: nn.Module
    analog: Dict[str, nn.Module] = field(default_factory=dict)


def run_sweep(
    models: Mapping[str, SweepModel],
    methods: Sequence[Method],
    metric: Callable[[nn.Module], float],
    *,
    out_dir: Union[str, Path],
    times: Sequence[float] = DEFAULT_TIMES,
    n_chips: int = 5,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    resume: bool = True,
    progress: bool = True,
    config: Optional[Mapping[str, Any]] = None,
    stop_after: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Evaluate every (model, method, drift time, chip) and journal one row per evaluation.

    For each model and chip index, chips (one per method ``source``) are programmed once with seed
    ``seed + chip`` and drifted to each time in turn; every method is evaluated on that chip, with a
    random stream seeded by (chip seed, time, method), so a row does not depend on what ran before it.
    A method that needs no chip (the digital reference) is evaluated once per model; its other rows
    repeat that value with zero seconds. Rows go to ``out_dir/rows.csv`` as they finish; with ``resume`` an existing journal made with the
    same settings is continued and finished rows are skipped, so an interrupted sweep resumed gives the
    same rows as one that ran straight through (up to the seconds columns).

    Args:
        models: ``{name: SweepModel}``; each method's ``source`` must be one of the model's analog variants.
        methods: :class:`Method` objects (names must be unique).
        metric: ``metric(model) -> float``; its ``name`` attribute labels the rows.
        out_dir: where ``rows.csv`` and ``sweep_config.json`` are written.
        times: drift times in seconds after programming.
        n_chips: independent chips per model.
        seed: base chip seed.
        device: where chips and models run (default: CUDA if available).
        resume: continue an existing journal (else it must not exist).
        config: extra settings recorded in ``sweep_config.json`` and checked on resume.
        stop_after: evaluate at most this many new rows, then return (for tests of interruption).

    Returns:
        All rows of the journal, old and new.
    """
    device = resolve_device(device)
    times = [check_drift_time(t) for t in times]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for model_name, spec in models.items():
        missing = sorted({m.source for m in methods if m.needs_chip} - set(spec.analog))
        if missing:
            raise ValueError(f"model '{model_name}' has no analog variant {missing} needed by the methods")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = out_dir / "rows.csv"
    settings = {
        "models": list(models), "methods": [m.describe() for m in methods], "times": times, "n_chips": n_chips,
        "seed": seed, "metric": "+".join(metric_names(metric)), **(dict(config) if config else {}),
    }
    _check_or_write_config(out_dir / "sweep_config.json", settings, resume, journal_path)

    journal = RowJournal(journal_path)  # opening it first drops a row cut off by a crash
    finished = read_rows(journal_path)
    done = {row_key(r) for r in finished}
    names = metric_names(metric)

    def is_done(model_name: str, method_name: str, t: float, c: int) -> bool:
        return all((model_name, method_name, t, c, name) in done for name in names)

    # chip-independent rows measured once per (model, method), also across a resume
    once: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]] = {}
    for r in finished:
        if r["source"] == "digital":
            once.setdefault((r["model"], r["method"]), {}).setdefault(r["metric"], r)
    todo = [(mn, c, t, m) for mn in models for c in range(n_chips) for t in times for m in methods
            if m.applies_at(t) and not is_done(mn, m.name, t, c)]
    evaluated = 0
    bar = tqdm(total=len(todo), desc="sweep", unit="eval", disable=not progress)
    try:
        for model_name, spec in models.items():
            digital = copy.deepcopy(spec.digital).to(device).eval()  # the caller's model stays put
            for c in range(n_chips):
                chips: Dict[str, Chip] = {}
                for t in times:
                    for method in methods:
                        if is_done(model_name, method.name, t, c) or not method.applies_at(t):
                            continue
                        if stop_after is not None and evaluated >= stop_after:
                            return read_rows(journal_path)
                        chip = None
                        if method.needs_chip:
                            if method.source not in chips:
                                chips[method.source] = Chip(spec.analog[method.source], seed + c, device=device)
                            chip = chips[method.source]
                            if chip.t != t:
                                chip.drift_to(t)
                        cached = once.get((model_name, method.name)) if not method.needs_chip else None
                        if cached is not None and set(cached) >= set(names):
                            rows = {name: _repeat(cached[name], t, seed + c) for name in names}
                        else:
                            rows = _evaluate(method, chip, t, digital, metric, seed + c, device)
                            if not method.needs_chip:
                                once[(model_name, method.name)] = rows
                        for name in names:
                            rows[name].update(model=model_name, time_label=time_label(t), chip=c, metric=name,
                                              device=str(device))
                            journal.append(rows[name])
                        evaluated += 1
                        bar.update(1)
                        shown = rows[names[0]]["value"]
                        bar.set_postfix_str(f"{model_name} {method.name} {time_label(t)} chip {c}: {shown:.2f}")
                del chips
    finally:
        bar.close()
        journal.close()
    return read_rows(journal_path)


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


def _check_or_write_config(path: Path, settings: Dict[str, Any], resume: bool, journal_path: Path) -> None:
    """Record the sweep settings; refuse to resume a journal written with different ones."""
    settings = json.loads(json.dumps(settings, default=str))
    if journal_path.exists() and journal_path.stat().st_size > 0:
        if not resume:
            raise FileExistsError(f"{journal_path} exists; pass resume=True to continue it or use another out_dir")
        if path.exists():
            previous = json.loads(path.read_text())
            if previous != settings:
                changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
                raise ValueError(
                    f"cannot resume {journal_path}: it was written with different settings ({changed}); "
                    "use another out_dir"
                )
    path.write_text(json.dumps(settings, indent=2) + "\n")
