"""Paired per-chip differences between methods, with t confidence intervals, as CSV, JSON, Markdown and a plot.

Every method of a sweep is measured on the same simulated chips (the same programming noise and drift), so
the fair comparison of two methods is the per-chip difference, not two overlapping error bars. For each
model, drift time and metric, and each pair of methods, the differences ``a - b`` are matched on the chip
seed; their mean, sample standard deviation and the confidence interval of the mean from the t distribution
with ``n - 1`` degrees of freedom are reported. A pair is *resolved* when the interval excludes zero, and only
then is one of the two called better.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.figure import Figure
from scipy import stats

from ..analog.times import time_label
from .figures import method_style, save_figure, time_axis

__all__ = ["paired_differences", "paired_markdown", "paired_cell", "plot_loss_vs_digital", "write_paired", "t_half_width"]


def _chip(row: Mapping[str, Any]) -> Any:
    return row.get("chip_seed", row.get("chip"))


def t_half_width(std: float, n: int, confidence: float = 0.95) -> Optional[float]:
    """Half-width of the ``confidence`` interval of a mean of ``n`` values with sample std ``std`` (t
    distribution, ``n - 1`` degrees of freedom); None for fewer than two values."""
    if n < 2:
        return None
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def paired_differences(rows: Sequence[Mapping[str, Any]], pairs: Optional[Sequence[Tuple[str, str]]] = None,
                       confidence: float = 0.95) -> List[Dict[str, Any]]:
    """Return one entry per (model, time, metric, pair ``(a, b)``) measured on at least one common chip.

    ``pairs`` default: every pair of methods, ``a`` after ``b`` in the order the rows first name them (so
    ``nabn - gdc``, ``hwa+nabn - hwa``, ``analog - digital``). Each entry has ``a``, ``b``, ``n_chips``,
    ``mean``, ``std`` (sample), ``ci_low``, ``ci_high`` (None with one chip), ``confidence``, ``resolved``
    (the interval excludes zero) and ``better`` (``a``, ``b`` or None when unresolved).

    Raises:
        ValueError: ``confidence`` outside (0, 1), or a method with two different values for one chip at one
            time (rows of two sweeps mixed; an exact repeat of a row counts once).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    values: Dict[tuple, Dict[Any, float]] = defaultdict(dict)
    methods: List[str] = []
    for row in rows:
        key = (row["model"], float(row["time_s"]), row["metric"], row["method"])
        chip = _chip(row)
        if chip in values[key] and values[key][chip] != float(row["value"]):  # an exact repeat is one measurement
            raise ValueError(f"method {row['method']!r} has two rows for chip {chip!r} at {time_label(key[1])} "
                             f"({row['model']}, {row['metric']}): pair rows of one sweep only")
        values[key][chip] = float(row["value"])
        if row["method"] not in methods:
            methods.append(row["method"])
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[:i]]
    cells = list(dict.fromkeys((k[0], k[1], k[2]) for k in values))
    out = []
    for model, t, metric in cells:
        for a, b in pairs:
            va, vb = values.get((model, t, metric, a)), values.get((model, t, metric, b))
            if not va or not vb:
                continue
            chips = [c for c in va if c in vb]
            if not chips:
                continue
            diffs = [va[c] - vb[c] for c in chips]
            n = len(diffs)
            mean = sum(diffs) / n
            std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
            half = t_half_width(std, n, confidence)
            low, high = (None, None) if half is None else (mean - half, mean + half)
            resolved = low is not None and (low > 0 or high < 0)
            out.append({"model": model, "time_s": t, "time_label": time_label(t), "metric": metric, "a": a, "b": b,
                        "n_chips": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high,
                        "confidence": confidence, "resolved": resolved,
                        "better": (a if mean > 0 else b) if resolved else None})
    return out


def paired_cell(p: Optional[Mapping[str, Any]], digits: int = 2) -> str:
    """Return one paired difference as a Markdown cell: "mean [low, high]", bold when resolved; "" for None."""
    if p is None:
        return ""
    if p["ci_low"] is None:
        return f"{p['mean']:+.{digits}f} (1 chip)"
    text = f"{p['mean']:+.{digits}f} [{p['ci_low']:+.{digits}f}, {p['ci_high']:+.{digits}f}]"
    return f"**{text}**" if p["resolved"] else text


def paired_markdown(paired: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    """Return a Markdown table: one row per (model, metric, ``a - b``), one column per time,
    "mean [low, high]" with the resolved cells (interval excluding zero) in bold."""
    times = sorted({p["time_s"] for p in paired})
    cell = {(p["model"], p["metric"], p["a"], p["b"], p["time_s"]): p for p in paired}
    keys = list(dict.fromkeys((p["model"], p["metric"], p["a"], p["b"]) for p in paired))
    lines = ["| model | metric | difference | " + " | ".join(time_label(t) for t in times) + " |",
             "|" + " --- |" * (len(times) + 3)]
    for model, metric, a, b in keys:
        cells = [paired_cell(cell.get((model, metric, a, b, t)), digits) for t in times]
        lines.append(f"| {model} | {metric} | {a} − {b} | " + " | ".join(cells) + " |")
    conf = sorted({p["confidence"] for p in paired})
    n = sorted({p["n_chips"] for p in paired})
    lines += ["", f"Paired per-chip differences (same chips for both methods): mean [{'/'.join(f'{100 * c:g}' for c in conf)} % "
              f"t confidence interval] over {'/'.join(map(str, n))} chips; bold: the interval excludes zero."]
    return "\n".join(lines) + "\n"


def plot_loss_vs_digital(paired: Sequence[Mapping[str, Any]], path: Union[str, Path], title: Optional[str] = None,
                         skip: Sequence[str] = ("analog",)) -> Optional[Path]:
    """Plot each method's paired difference to ``digital`` against time with its confidence interval (one
    panel per model and metric); ``skip`` leaves out methods that would squeeze the axis (the uncompensated
    ``analog``). Returns the path, or None when no pair with ``digital`` exists."""
    points = [p for p in paired if p["b"] == "digital" and p["a"] not in skip and p["ci_low"] is not None]
    if not points:
        return None
    panels = list(dict.fromkeys((p["model"], p["metric"]) for p in points))
    fig = Figure(figsize=(5.5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (model, metric) in zip(axes, panels):
        for method in dict.fromkeys(p["a"] for p in points):
            pts = sorted((p["time_s"], p["mean"], p["ci_low"], p["ci_high"]) for p in points
                         if p["model"] == model and p["metric"] == metric and p["a"] == method)
            if not pts:
                continue
            ts, means, lows, highs = zip(*pts)
            err = [[m - lo for m, lo in zip(means, lows)], [hi - m for m, hi in zip(means, highs)]]
            ax.errorbar(ts, means, yerr=err, capsize=3, label=method, **method_style(method))
        ax.axhline(0.0, color="black", linewidth=0.8)
        time_axis(ax, (p["time_s"] for p in points))
        ax.set_ylabel(f"{metric}: method − digital (paired, 95 % CI)")
        ax.set_title(model)
        ax.legend(loc="lower left", fontsize="small")
    return save_figure(fig, path, title)


def write_paired(rows: Sequence[Mapping[str, Any]], out_dir: Union[str, Path], title: Optional[str] = None,
                 confidence: float = 0.95) -> Dict[str, Path]:
    """Write ``paired.csv``, ``paired.json``, ``paired.md`` and (when ``digital`` is among the methods)
    ``loss_vs_digital.png`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paired = paired_differences(rows, confidence=confidence)
    paths = {name: out_dir / name for name in ("paired.csv", "paired.json", "paired.md")}
    paths["paired.json"].write_text(json.dumps(paired, indent=1) + "\n")
    with paths["paired.csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(paired[0]) if paired else ["model"])
        writer.writeheader()
        writer.writerows(paired)
    paths["paired.md"].write_text(paired_markdown(paired) if paired else "No pair of methods shares a chip.\n")
    plot = plot_loss_vs_digital(paired, out_dir / "loss_vs_digital.png", title)
    if plot is not None:
        paths["loss_vs_digital.png"] = plot
    return paths
