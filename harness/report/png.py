"""Writing a report figure as a PNG file, the one way every figure is written."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 100


def save_png(fig: Figure | None, path: Path) -> Path | None:
    """`fig` at DPI into `path` (its folder made); None for no figure. No bbox_inches="tight": it would
    change the size the figure promises."""
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path
