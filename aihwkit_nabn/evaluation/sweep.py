"""Drift-over-time sweep: models x methods x times x independent chips, journaled row by row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..analog.times import DEFAULT_TIMES, check_drift_time
from ..utils.devices import resolve_device
from .journal import RowJournal, read_rows, row_key
from .methods import Method
from .ray_sweep import run_units_on_ray
from .sweep_unit import SweepModel, is_done, metric_names, sweep_unit

__all__ = ["SweepModel", "run_sweep", "metric_names", "DEFAULT_TIMES"]


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
    ray: Optional[Union[bool, Mapping[str, Any]]] = None,
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
        ray: run the work units (one model x chip: every source, time and method of it, so each chip is
            programmed once) as Ray tasks (:func:`~.ray_sweep.run_units_on_ray`; True, or a dict of its
            options such as ``address``, ``gpus_per_unit``, ``max_retries``); rows are journaled here as units
            finish. None: in this process, and Ray is not imported.

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


    # chip-independent rows measured once per (model, method), also across a resume
    once: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]] = {}
    for r in finished:
        if r["source"] == "digital":
            once.setdefault((r["model"], r["method"]), {}).setdefault(r["metric"], r)
    todo = [(mn, c, t, m) for mn in models for c in range(n_chips) for t in times for m in methods
            if m.applies_at(t) and not is_done(done, names, mn, m.name, t, c)]
    evaluated = 0
    bar = tqdm(total=len(todo), desc="sweep", unit="eval", disable=not progress)

    def record(rows: Dict[str, Dict[str, Any]]) -> None:
        nonlocal evaluated
        for name in names:
            journal.append(rows[name])
        evaluated += 1
        bar.update(1)
        first = rows[names[0]]
        bar.set_postfix_str(f"{first['model']} {first['method']} {first['time_label']} chip {first['chip']}: "
                            f"{first['value']:.2f}")

    units = list(dict.fromkeys((mn, c) for mn, c, _, _ in todo))  # (model, chip) pairs with work left
    try:
        if ray is not None:
            run_units_on_ray(units, models, methods, metric, times=times, seed=seed, device=device, done=done,
                             once=once, on_rows=record, **(dict(ray) if isinstance(ray, Mapping) else {}))
        else:
            for model_name, c in units:
                unit = sweep_unit(model_name, models[model_name], methods, metric, c, times, seed=seed,
                                  device=device, done=done, once=once)
                while True:
                    if stop_after is not None and evaluated >= stop_after:
                        return read_rows(journal_path)
                    rows = next(unit, None)
                    if rows is None:
                        break
                    record(rows)
    finally:
        bar.close()
        journal.close()
    return read_rows(journal_path)


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
