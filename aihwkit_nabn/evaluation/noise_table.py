"""The noise-model table: one comparison per noise setting, collected into rows, a table and a heat map.

``run_noise_table`` runs the main part of the comparison once per named noise setting
(:mod:`aihwkit_nabn.analog.noise_settings`), each journaled in ``<out>/settings/<name>/`` (a rerun resumes),
at the times the setting supports (all of the config's times, or the setting's own, e.g. ReRamWan2022's
1 s / 1 d / 2 d); a setting already finished there with the same config is read back, so several processes can
each run some of the settings into one folder and a last run with all of them writes the table. It then writes
``rows.csv`` (every setting's rows with a ``setting`` column), ``table.md`` / ``table.json`` (rows: settings;
columns: methods at the last time, mean ± std over chips, and whether the setting meets the target), ``paired.md`` /
``paired.json`` (the paired differences that answer which method to use, per setting at its last time),
``recovered.png`` (the share of the gdc loss that nabn recovers, per setting and time) and ``run.json``.

The target (issue 14's, overridable as ``[noise] target_loss`` / ``target_share``): where ``gdc`` loses more than
2 points against ``digital`` at the last time, ``nabn`` recovers at least half of that loss. Below 2 points the share
is a ratio of two small, noisy differences; the table says "n/a" there and the heat map hatches those cells.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..analog.noise_settings import noise_setting
from ..analog.times import time_label
from ..errors import ConfigError
from ..utils.provenance import code_commit
from .comparison import check_config, finished, run_comparison
from .figures import save_figure
from .journal import read_rows
from .paired import paired_cell, paired_differences
from .report import summarize
from .task import Task

__all__ = ["run_noise_table", "check_noise_table", "recovered_fraction", "setting_config", "target_status"]

PathLike = Union[str, Path]
TARGET_LOSS = 2.0  # points of the metric gdc must lose before the target applies
TARGET_SHARE = 0.5  # share of that loss nabn must recover


def recovered_fraction(digital: float, gdc: float, nabn: float) -> Optional[float]:
    """The share of the loss of ``gdc`` against ``digital`` that ``nabn`` recovers: ``(nabn - gdc) / (digital -
    gdc)``; None when gdc loses nothing (no loss to recover)."""
    loss = digital - gdc
    return None if loss <= 0 else (nabn - gdc) / loss


def setting_config(config: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """Return ``config`` for one noise setting: ``hardware.noise`` set, the setting's own times if it has any."""
    sub = copy.deepcopy(dict(config))
    sub.pop("noise", None)
    sub["hardware"] = {**sub.get("hardware", {}), "noise": name}
    # the table runs the main part only: the other parts' times must not stop a setting
    sub["retention"], sub["calib_size"] = {"models": []}, {"models": []}
    setting = noise_setting(name)
    if setting.times is not None:
        sub["sweep"] = {**sub["sweep"], "times": [time_label(t) for t in setting.times]}
    return sub


def check_noise_table(config: Mapping[str, Any], *, base: Optional[Path] = None,
                      settings: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Return every setting's checked config, by name (``settings``, default ``config["noise"]["settings"]``),
    before anything runs.

    Raises:
        ConfigError: no settings, or a setting's config that does not check (e.g. a time it is not defined at).
    """
    names = list(settings if settings is not None else config.get("noise", {}).get("settings", []))
    if not names:
        raise ConfigError("no noise settings: give [noise] settings = [...] in the config")
    configs = {name: setting_config(config, name) for name in names}
    for name, sub in configs.items():
        check_config(sub, where=f"noise setting {name!r}", base=base)
    return configs


def run_noise_table(task: Task, config: Mapping[str, Any], out_dir: PathLike, *, base: Optional[Path] = None,
                    device: Optional[str] = None, progress: bool = True, settings: Optional[Sequence[str]] = None,
                    command: str = "", ray: Optional[Any] = None) -> Dict[str, Any]:
    """Run the comparison's main part for every setting of ``config["noise"]["settings"]`` (or ``settings``);
    write the table files into ``out_dir``; return ``run.json``'s content."""
    configs = check_noise_table(config, base=base, settings=settings)
    names = list(configs)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    commit = code_commit()  # before anything is written: a re-render into a committed folder must not read dirty
    rows: List[Dict[str, Any]] = []
    for name, sub in configs.items():
        folder = out_dir / "settings" / name
        # a setting finished with this config (by an earlier call, or by another process given other settings
        # into the same out_dir) is read back, not re-entered: re-entering costs its data, models and input ranges
        if not finished(folder, sub):
            run_comparison(task, sub, folder, base=base, device=device, progress=progress, parts=("main",),
                           command=command, ray=ray)
        rows += [{"setting": name, **r} for r in read_rows(folder / "main" / "rows.csv")]
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summaries = {name: summarize([r for r in rows if r["setting"] == name]) for name in names}
    noise = config.get("noise", {})
    target = (float(noise.get("target_loss", TARGET_LOSS)), float(noise.get("target_share", TARGET_SHARE)))
    table = _table(summaries, target)
    (out_dir / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (out_dir / "table.md").write_text(_markdown(table, target))
    paired = _paired_at_last_time(rows, names)
    (out_dir / "paired.json").write_text(json.dumps(paired, indent=1) + "\n")
    (out_dir / "paired.md").write_text(_paired_markdown(paired))
    _heat_map(summaries, sorted({float(r["time_s"]) for r in rows}), out_dir / "recovered.png", target[0])
    # the table may be written by a later commit than the rows (a re-render from the journals): record both
    run = {"command": command, "commit": commit, "task": task.name, "settings": names,
           "setting_commits": {n: _commit_of(out_dir / "settings" / n) for n in names},
           "descriptions": {n: noise_setting(n).description for n in names},
           "target": {"loss": target[0], "share": target[1]},
           "wall_seconds": round(time.perf_counter() - start, 1), "config": config}
    (out_dir / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return run


def _commit_of(folder: Path) -> Optional[str]:
    """The commit recorded in a setting's ``run.json`` (None when it has none)."""
    try:
        return json.loads((folder / "run.json").read_text()).get("commit")
    except (OSError, ValueError):
        return None


def target_status(gdc_loss: float, recovered: Optional[float], target: Tuple[float, float]) -> str:
    """``"met"`` or ``"missed"`` where gdc loses more than ``target[0]`` points (nabn must recover at least
    ``target[1]`` of the loss), else ``"n/a"``."""
    if recovered is None or not gdc_loss > target[0]:
        return "n/a"
    return "met" if recovered >= target[1] else "missed"


def _table(summaries: Mapping[str, Sequence[Mapping[str, Any]]],
           target: Tuple[float, float] = (TARGET_LOSS, TARGET_SHARE)) -> List[Dict[str, Any]]:
    """One entry per (setting, model, metric) at the setting's last time: every method's mean and std, the
    share of gdc's loss that nabn recovers and the target's verdict (``summaries``: each setting's row summaries,
    in table order)."""
    table = []
    for name, summary in summaries.items():
        for model, metric in dict.fromkeys((s["model"], s["metric"]) for s in summary):
            cells = [s for s in summary if s["model"] == model and s["metric"] == metric]
            t_last = max(s["time_s"] for s in cells)
            at = {s["method"]: s for s in cells if s["time_s"] == t_last}
            entry = {"setting": name, "model": model, "metric": metric, "time_s": t_last,
                     "time_label": time_label(t_last),
                     "methods": {m: {"mean": s["mean"], "std": s["std"], "n_chips": s["n_chips"]} for m, s in at.items()}}
            if all(m in at for m in ("digital", "gdc", "nabn")):
                entry["gdc_loss"] = at["digital"]["mean"] - at["gdc"]["mean"]
                entry["nabn_recovered"] = recovered_fraction(at["digital"]["mean"], at["gdc"]["mean"], at["nabn"]["mean"])
                entry["target"] = target_status(entry["gdc_loss"], entry["nabn_recovered"], target)
            table.append(entry)
    return table


# the questions the table answers, as paired differences (a - b) on the same chips
PAIRS = (("nabn", "gdc"), ("bnft", "nabn"), ("hwa", "gdc"), ("hwa+nabn", "hwa"), ("hwa+nabn", "nabn"),
         ("hwa+nabn", "bnft"))


def _paired_at_last_time(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> List[Dict[str, Any]]:
    """Every setting's paired differences of :data:`PAIRS` at its last time (each entry with its ``setting``)."""
    out = []
    for name in names:
        mine = [r for r in rows if r["setting"] == name]
        if not mine:
            continue
        t_last = max(float(r["time_s"]) for r in mine)
        out += [{"setting": name, **p} for p in paired_differences(mine, PAIRS) if p["time_s"] == t_last]
    return out


def _paired_markdown(paired: Sequence[Mapping[str, Any]]) -> str:
    """Rows: (setting, model, metric, time); columns: the pairs; "mean [low, high]", bold where resolved."""
    pairs = [f"{a} − {b}" for a, b in PAIRS]
    cell = {(p["setting"], p["model"], p["metric"], f"{p['a']} − {p['b']}"): p for p in paired}
    keys = list(dict.fromkeys((p["setting"], p["model"], p["metric"], p["time_label"]) for p in paired))
    lines = ["| setting | model | metric | time | " + " | ".join(pairs) + " |", "|" + " --- |" * (len(pairs) + 4)]
    for setting, model, metric, label in keys:
        cells = [paired_cell(cell.get((setting, model, metric, pair))) for pair in pairs]
        lines.append(f"| {setting} | {model} | {metric} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired per-chip differences at each setting's last time (same chips for both methods): mean "
              "[95 % t confidence interval]; bold: the interval excludes zero."]
    return "\n".join(lines) + "\n"


def _markdown(table: Sequence[Mapping[str, Any]], target: Tuple[float, float] = (TARGET_LOSS, TARGET_SHARE)) -> str:
    methods = list(dict.fromkeys(m for e in table for m in e["methods"]))
    lines = ["| setting | model | metric | time | " + " | ".join(methods) + " | gdc loss | nabn recovers | target |",
             "|" + " --- |" * (len(methods) + 7)]
    for e in table:
        cells = [f"{e['methods'][m]['mean']:.2f} ± {e['methods'][m]['std']:.2f}" if m in e["methods"] else ""
                 for m in methods]
        rec = e.get("nabn_recovered")
        lines.append(f"| {e['setting']} | {e['model']} | {e['metric']} | {e['time_label']} | " + " | ".join(cells)
                     + f" | {e.get('gdc_loss', float('nan')):.2f} | " + ("—" if rec is None else f"{round(100 * rec)} %")
                     + f" | {e.get('target', 'n/a')} |")
    lines += ["", "Mean ± sample std over chips at each setting's last drift time; 'nabn recovers' = (nabn − gdc) / "
              "(digital − gdc), '—' where gdc loses nothing; target: where gdc loses more than "
              f"{target[0]:g} points, nabn recovers at least {100 * target[1]:.0f} % of the loss ('n/a' elsewhere)."]
    return "\n".join(lines) + "\n"


def _heat_map(summaries: Mapping[str, Sequence[Mapping[str, Any]]], times: Sequence[float], path: Path,
              min_loss: float = TARGET_LOSS) -> None:
    """Settings x ``times``, colour = the share of gdc's loss that nabn recovers (first model and metric); each cell
    also names gdc's loss, and cells where it is at most ``min_loss`` points are hatched (the share is unreliable)."""
    names = list(summaries)
    grid, losses, metrics = [], [], set()
    for summary in summaries.values():
        share_line, loss_line = [math.nan] * len(times), [math.nan] * len(times)
        if summary:
            model, metric = summary[0]["model"], summary[0]["metric"]
            metrics.add(metric)
            at = {(s["method"], s["time_s"]): s["mean"] for s in summary
                  if s["model"] == model and s["metric"] == metric}
            for j, t in enumerate(times):
                if all((m, t) in at for m in ("digital", "gdc", "nabn")):
                    rec = recovered_fraction(at[("digital", t)], at[("gdc", t)], at[("nabn", t)])
                    share_line[j] = math.nan if rec is None else 100 * rec
                    loss_line[j] = at[("digital", t)] - at[("gdc", t)]
        grid.append(share_line)
        losses.append(loss_line)
    fig = Figure(figsize=(1.3 * len(times) + 3.8, 0.5 * len(names) + 1.9))
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=0.0, vmax=100.0, cmap="viridis", aspect="auto")
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            loss = losses[i][j]
            small = not loss > min_loss  # also NaN: no comparison at this time
            if small and not math.isnan(loss):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", alpha=0.75, hatch="///",
                                       edgecolor="0.6", linewidth=0))
            if not math.isnan(loss):
                share = "—" if math.isnan(value) else f"{round(value)} %"  # round: no "-0"
                ax.text(j, i, f"{share}\ngdc −{loss:.1f}" if loss > 0 else f"{share}\ngdc +{-loss:.1f}",
                        ha="center", va="center", fontsize=7,
                        color="black" if small or value >= 50 else "white")
    ax.set_xticks(range(len(times)), [time_label(t) for t in times])
    ax.set_yticks(range(len(names)), list(names))
    ax.set_xlabel(f"time after programming (hatched: gdc loses at most {min_loss:g} points; "
                  "second line: gdc's loss against digital)")
    ax.set_title("share of the gdc loss that nabn recovers" + (f" ({', '.join(sorted(metrics))})" if metrics else ""))
    fig.colorbar(image, ax=ax, label="% of gdc's loss recovered")
    save_figure(fig, path)
