"""What every figure of the reports shares: the drift-time axis and saving (bare matplotlib Figures, no pyplot:
no window, no display needed, and the user's matplotlib backend is left alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..analog.times import time_label

__all__ = ["time_axis", "save_figure"]


def time_axis(ax: Any, times: Iterable[float]) -> None:
    """Make ``ax``'s x axis the drift time: log scale, one tick per time labelled ``1s``, ``1d`` ..., a grid."""
    ticks = sorted(set(times))
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([time_label(t) for t in ticks])
    ax.set_xlabel("time after programming")
    ax.grid(True, alpha=0.3)


def save_figure(fig: Any, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Give ``fig`` its ``title``, lay it out and write it to ``path`` (folders made, 120 dpi); return the path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
