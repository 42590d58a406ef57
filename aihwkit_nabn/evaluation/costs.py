"""What each method costs: device seconds per deployment, samples, trained parameters, HWA training once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from matplotlib.figure import Figure

from ..analog.times import time_label
from .figures import method_style, save_figure
from .methods import HWA_METHODS
from .paired import t_half_width
from .report import summarize

__all__ = ["method_costs", "write_costs", "plot_accuracy_vs_cost"]


def method_costs(rows: Sequence[Mapping[str, Any]], hwa_meta: Mapping[str, Mapping[str, Any]],
                 model_params: Mapping[str, int]) -> List[Dict[str, Any]]:
    """Return one cost entry per (model, method): GPU seconds per deployment, samples, trained parameters,
    peak memory, and HWA training once per model (its seconds and all its parameters)."""
    entries = []
    for s in summarize(rows):
        if s["time_s"] != max(r["time_s"] for r in rows if r["model"] == s["model"]):
            continue
        hwa = s["method"] in HWA_METHODS
        meta = hwa_meta.get(s["model"], {})
        entries.append({
            "model": s["model"], "method": s["method"], "metric": s["metric"], "value_last_time": s["mean"], "value_std": s["std"],
            "n_chips": s["n_chips"],
            "time_label": s["time_label"], "deploy_seconds": s["method_seconds"], "eval_seconds": s["eval_seconds"],
            "unlabeled_samples": s["unlabeled_samples"], "labeled_samples": s["labeled_samples"],
            "trained_params_per_chip": s["trained_params"], "peak_mem_mib": s["peak_mem_mib"],
            "hwa_training_seconds_once": meta.get("seconds") if hwa else None,
            "hwa_training_labeled_samples_once": meta.get("hparams", {}).get("n_train") if hwa else None,
            "hwa_trained_params_once": model_params.get(s["model"]) if hwa else None,
        })
    return entries


def write_costs(costs: Sequence[Mapping[str, Any]], out_dir: Path) -> None:
    """Write ``costs.json`` and ``costs.md``."""
    (out_dir / "costs.json").write_text(json.dumps(list(costs), indent=1) + "\n")
    metrics = list(dict.fromkeys(c["metric"] for c in costs)) or ["metric"]
    several = len(metrics) > 1
    value = "value" if several else metrics[0]
    lines = [f"| model | method | {'metric | ' if several else ''}{value} at last time | device s per deployment | unlabeled "
             "| labeled | params trained per chip | HWA training (once per model) | peak MiB |",
             "|" + " --- |" * (9 + several)]

    def fmt(v: Any, spec: str = "") -> str:
        return "" if v is None else format(v, spec)

    for c in costs:
        hwa = (f"{c['hwa_training_seconds_once']:.0f} s, {fmt(c['hwa_trained_params_once'], ',')} params, "
               f"{fmt(c['hwa_training_labeled_samples_once'], ',') or '?'} labeled"
               if c["hwa_training_seconds_once"] is not None else "")
        lines.append(f"| {c['model']} | {c['method']} | {c['metric'] + ' | ' if several else ''}"
                     f"{c['value_last_time']:.2f} ± {c['value_std']:.2f} | "
                     f"{c['deploy_seconds']:.2f} | {c['unlabeled_samples']} | {c['labeled_samples']} | "
                     f"{c['trained_params_per_chip']} | {hwa} | {fmt(c['peak_mem_mib'], '.0f')} |")
    (out_dir / "costs.md").write_text("\n".join(lines) + "\n")


def _interval(cost: Mapping[str, Any]) -> float:
    """Half-width of the 95 % t interval of the mean over chips (the std for entries written without n_chips)."""
    n = cost.get("n_chips")
    if not n:
        return cost["value_std"]
    return t_half_width(cost["value_std"], n) or 0.0


def plot_accuracy_vs_cost(rows: Sequence[Mapping[str, Any]], costs: Sequence[Mapping[str, Any]], path: Path,
                          t_last: float, skip: Sequence[str] = ("analog",)) -> Path:
    """Plot the metric at the last drift time against device seconds per deployment (+ HWA training), per model
    (the first metric, where there are several), with the 95 % t interval of the mean over chips; return the path.

    The methods in ``skip`` (the uncompensated ``analog``, near chance after drift) are left off the axis, which
    would otherwise span 10-92 % and squeeze the methods that matter into a few pixels; each panel names their
    values in a note instead."""
    if costs:
        costs = [c for c in costs if c["metric"] == costs[0]["metric"]]
    models = list(dict.fromkeys(c["model"] for c in costs))
    fig = Figure(figsize=(5 * len(models), 4))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        off_axis = []
        for c in (c for c in costs if c["model"] == model):
            if c["method"] in skip:
                off_axis.append(f"{c['method']} {c['value_last_time']:.1f}")
                continue
            cost = c["deploy_seconds"] + (c["hwa_training_seconds_once"] or 0.0)
            ax.errorbar([max(cost, 1e-3)], [c["value_last_time"]], yerr=[_interval(c)], capsize=3,
                        label=c["method"], linestyle="none", **method_style(c["method"]))
        if off_axis:
            ax.text(0.02, 0.02, "off the axis: " + ", ".join(off_axis), transform=ax.transAxes, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("device seconds (deployment on one chip + HWA training;\nno cost drawn at 1e-3)")
        ax.set_title(f"{model}, {time_label(t_last)} after programming")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"{costs[0]['metric'] if costs else 'metric'} (%), 95 % t interval over chips")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
