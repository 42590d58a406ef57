"""Sweep work units as Ray tasks: the optional cluster executor of :func:`~.sweep.run_sweep`.

Each unit (one model on one chip index: :func:`~.sweep_unit.sweep_unit`) runs as one Ray task that asks for
a CPU and, on CUDA, a fraction of a GPU; the driver journals a unit's rows when it finishes, so the journal
stays the single source of truth: a killed run resumes with the units it had not journaled, a unit that
raises is retried (``max_retries``) and then reported with every other unit's rows kept. Rows equal a
single-process run's (every evaluation is seeded by chip, time and method; the worker uses the driver's
thread count so CPU arithmetic is the same), up to the seconds columns and the order rows arrive in.
Ray is imported only here, only when asked for (``pip install "aihwkit-nabn[ray]"``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch

from ..errors import ConfigError, NABNError
from .sweep_unit import sweep_unit

__all__ = ["run_units_on_ray", "UnitsFailedError"]


class UnitsFailedError(NABNError, RuntimeError):
    """Some sweep units failed on every retry; the rows of the others are journaled."""


def _unit_task(shared: Tuple[Any, Any, Any], model_name: str, chip: int, times: Sequence[float], seed: int,
               device: str, done: Set[Tuple], once: Dict, threads: int) -> List[Dict[str, Dict[str, Any]]]:
    torch.set_num_threads(threads)
    models, methods, metric = shared
    return list(sweep_unit(model_name, models[model_name], methods, metric, chip, times, seed=seed,
                           device=torch.device(device), done=done, once=dict(once)))


def run_units_on_ray(units: Sequence[Tuple[str, int]], models: Mapping[str, Any], methods: Sequence[Any],
                     metric: Any, *, times: Sequence[float], seed: int, device: torch.device, done: Set[Tuple],
                     once: Dict, on_rows: Callable[[Dict[str, Dict[str, Any]]], None],
                     address: Optional[str] = None, gpus_per_unit: float = 0.25, max_retries: int = 2,
                     num_cpus: Optional[int] = None) -> None:
    """Run ``units`` ((model name, chip index) pairs) as Ray tasks; call ``on_rows`` with each evaluation's rows
    as its unit finishes.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``), or None for a local Ray started here
    (with ``num_cpus``). ``gpus_per_unit``: the GPU share a unit asks for on CUDA (0.25: four units per GPU).

    Raises:
        ConfigError: Ray is not installed.
        UnitsFailedError: units that failed on every retry (named, with their last error).
    """
    try:
        import ray  # pylint: disable=import-outside-toplevel  # optional: only with --ray
    except ImportError:
        raise ConfigError('--ray needs Ray: pip install "aihwkit-nabn[ray]"') from None
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    gpus = gpus_per_unit if device.type == "cuda" else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True)(_unit_task)
    shared = ray.put((dict(models), list(methods), metric))
    target = "cuda" if device.type == "cuda" else str(device)  # each worker's own GPU
    pending = {task.remote(shared, model_name, chip, list(times), seed, target, set(done), dict(once),
                           torch.get_num_threads()): (model_name, chip) for model_name, chip in units}
    failed: List[str] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(ready[0])
        try:
            results = ray.get(ready[0])
        except Exception as err:  # pylint: disable=broad-except  # every other unit goes on
            cause = getattr(err, "cause", None) or err  # a RayTaskError wraps the unit's own exception
            failed.append(f"{unit[0]} chip {unit[1]}: {type(cause).__name__}: {str(cause).strip().splitlines()[-1][:200]}")
            continue
        for rows in results:
            on_rows(rows)
    if failed:
        raise UnitsFailedError(f"{len(failed)} sweep unit(s) failed after {max_retries} retries (the other units' "
                               f"rows are journaled; rerun to retry them): " + "; ".join(failed))
