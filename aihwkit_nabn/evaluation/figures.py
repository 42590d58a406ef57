"""What every figure of the reports shares: the drift-time axis, one look per method and saving (bare matplotlib
Figures, no pyplot: no window, no display needed, and the user's matplotlib backend is left alone)."""

from __future__ import annotations

from pathlib import Path
import zlib
from typing import Any, Dict, Iterable, Optional, Union

from ..analog.times import time_label

__all__ = ["time_axis", "method_style", "save_figure"]

# one colour and marker per method in every plot (the sweep, the loss against digital, accuracy against cost), so
# a reader can follow a method from figure to figure; the HWA-trained methods get squares, so that points at the
# same cost (HWA training dominates it) stay apart
_STYLES = {
    "digital": ("black", "o"), "analog": ("tab:gray", "x"), "gdc": ("tab:blue", "o"), "nabn": ("tab:orange", "o"),
    "bnft": ("tab:green", "o"), "hwa": ("tab:red", "s"), "hwa+nabn": ("tab:purple", "s"),
    "hwa+bnft": ("tab:brown", "s"),
}
_OTHER_COLOURS = ("tab:pink", "tab:olive", "tab:cyan", "gold", "navy", "teal", "maroon", "lime")


def time_axis(ax: Any, times: Iterable[float]) -> None:
    """Make ``ax``'s x axis the drift time: log scale, one tick per time labelled ``1s``, ``1d`` ..., a grid."""
    ticks = sorted(set(times))
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([time_label(t) for t in ticks])
    ax.set_xlabel("time after programming")
    ax.grid(True, alpha=0.3)


def method_style(method: str) -> Dict[str, str]:
    """Return the ``color`` and ``marker`` of ``method`` for ``errorbar``/``plot``: fixed for the main methods,
    for others (``nabn@1d``, ``nabn[256]`` ...) a colour chosen from the name, the same in every run."""
    if method in _STYLES:
        colour, marker = _STYLES[method]
    else:
        colour, marker = _OTHER_COLOURS[zlib.crc32(method.encode()) % len(_OTHER_COLOURS)], "D"
    return {"color": colour, "marker": marker}


def save_figure(fig: Any, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Give ``fig`` its ``title``, lay it out and write it to ``path`` (folders made, 120 dpi); return the path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
