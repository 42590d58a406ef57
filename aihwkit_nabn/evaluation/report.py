"""Summaries of sweep rows: mean and standard deviation over chips (and paired differences), as CSV, JSON, Markdown and plots."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from matplotlib.figure import Figure

from ..analog.times import time_label
from .figures import method_style, save_figure, time_axis
from .paired import write_paired


def summarize(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Return one entry per (model, method, time, metric): mean, sample std and count over chips, and mean costs."""
    groups: Dict[tuple, List[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["method"], float(row["time_s"]), row["metric"])].append(row)
    summary = []
    for (model, method, t, _metric), group in groups.items():
        values = [float(r["value"]) for r in group]
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        summary.append({
            "model": model, "method": method, "time_s": t, "time_label": time_label(t), "metric": group[0]["metric"],
            "mean": mean, "std": std, "n_chips": n,
            "method_seconds": sum(float(r["method_seconds"]) for r in group) / n,
            "eval_seconds": sum(float(r["eval_seconds"]) for r in group) / n,
            "unlabeled_samples": int(group[0]["unlabeled_samples"]), "labeled_samples": int(group[0]["labeled_samples"]),
            "trained_params": int(group[0].get("trained_params") or 0),
            "peak_mem_mib": max((float(r["peak_mem_mib"]) for r in group if r.get("peak_mem_mib") not in (None, "")),
                                default=None),
        })
    return summary


def markdown_table(summary: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    """Return a Markdown table: one row per (model, method[, metric]), one column per time, "mean ± std".

    A column ``metric`` is added when the summary holds more than one metric (e.g. AP50 and mAP).
    """
    times = sorted({s["time_s"] for s in summary})
    metrics = list(dict.fromkeys(s["metric"] for s in summary))
    several = len(metrics) > 1
    cell = {(s["model"], s["method"], s["metric"], s["time_s"]): s for s in summary}
    keys = list(dict.fromkeys((s["model"], s["method"], s["metric"]) for s in summary))
    header = "| model | method | " + ("metric | " if several else "") + " | ".join(time_label(t) for t in times) + " |"
    lines = [header, "|" + " --- |" * (len(times) + 2 + several)]
    for model, method, metric in keys:
        cells = []
        for t in times:
            s = cell.get((model, method, metric, t))
            cells.append("" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}")
        lines.append(f"| {model} | {method} | " + (f"{metric} | " if several else "") + " | ".join(cells) + " |")
    n = sorted({s["n_chips"] for s in summary})
    lines.append("")
    lines.append(f"{', '.join(metrics) or 'metric'}: mean ± sample standard deviation over {'/'.join(map(str, n))} chips.")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: Sequence[Mapping[str, Any]], path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Plot the metric against drift time (log x axis): one panel per model (a row of panels per metric),
    error bars per method."""
    models = list(dict.fromkeys(s["model"] for s in summary))
    methods = list(dict.fromkeys(s["method"] for s in summary))
    metrics = list(dict.fromkeys(s["metric"] for s in summary)) or ["metric"]
    fig = Figure(figsize=(5 * len(models), 4 * len(metrics)))
    grid = fig.subplots(len(metrics), len(models), squeeze=False, sharey="row")
    for row, metric in enumerate(metrics):
        _plot_metric(grid[row], [s for s in summary if s["metric"] == metric], models, methods, metric)
    return save_figure(fig, path, title)


def _plot_metric(axes: Sequence[Any], summary: Sequence[Mapping[str, Any]], models: Sequence[str],
                 methods: Sequence[str], metric: str) -> None:
    """One row of panels (one per model) of one metric."""
    for ax, model in zip(axes, models):
        for method in methods:
            points = sorted((s["time_s"], s["mean"], s["std"]) for s in summary if s["model"] == model and s["method"] == method)
            if not points:
                continue
            ts, means, stds = zip(*points)
            ax.errorbar(ts, means, yerr=stds, capsize=3, label=method, **method_style(method))
        time_axis(ax, (s["time_s"] for s in summary))
        ax.set_title(model)
    axes[0].set_ylabel(metric)
    axes[-1].legend(loc="lower left")


def write_report(rows: Sequence[Mapping[str, Any]], out_dir: Union[str, Path], title: Optional[str] = None) -> Dict[str, Path]:
    """Write ``rows.json``, ``summary.csv``, ``summary.json``, ``summary.md`` and ``sweep.png``, and the paired
    per-chip differences (:func:`~aihwkit_nabn.evaluation.paired.write_paired`: ``paired.*``,
    ``loss_vs_digital.png``); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    paths = {name: out_dir / name for name in ("rows.json", "summary.csv", "summary.json", "summary.md", "sweep.png")}
    paths["rows.json"].write_text(json.dumps(list(rows), indent=1) + "\n")
    paths["summary.json"].write_text(json.dumps(summary, indent=1) + "\n")
    with paths["summary.csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["model"])
        writer.writeheader()
        writer.writerows(summary)
    paths["summary.md"].write_text(markdown_table(summary))
    plot_sweep(summary, paths["sweep.png"], title)
    paths.update(write_paired(rows, out_dir, title))
    return paths
