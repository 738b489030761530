"""PNG figures from a run's rows (accuracy against seconds per sample, TTT loss curves) and the
islands-of-agreement view (per-location features projected to 3 colours, side by side over TTT).

Figures are drawn on matplotlib's object API (no pyplot state, no display needed) at fixed sizes, so
a figure's pixel size is known in advance and tests can check it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.report.accuracy import cells
from harness.report.paper import count_estimate, line_keys
from harness.report.rowset import RowSet, as_rowset
from harness.report.stats import RESAMPLES
from harness.report.tables import method_label, teacher_label

DPI = 100
RUN_FIGSIZE = (8, 5)
"""Inches: run figures are 800 x 500 pixels."""
ISLAND_PANEL = (2.5, 3)
"""Inches per panel of the islands figure: (panels x 250) x 300 pixels."""


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": it would change the size
    return path


def _label(method: str, model: str, pretrained: str) -> str:
    return f"{method_label(method)} ({teacher_label(model, pretrained)})"


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
"""One shape per method x teacher (with its colour), drawn hollow: two methods at the same point (both
100% at the same cost, say) stay visible as two outlines instead of one hiding the other."""
ACCURACY_LIMITS = (0.0, 100.0)
"""The accuracy axis is exactly 0-100 %; markers on its edges are drawn unclipped, so no tick above 100
is needed to show a 100% point in full."""


PER_TASK_SQL = """
SELECT run, method, model, pretrained, task, count(*) AS n,
       count(*) FILTER (WHERE coalesce(correct, false)) AS hits, median(seconds) AS seconds
FROM rows WHERE error IS NULL GROUP BY ALL
"""
PER_LINE_SQL = """
SELECT run, method, model, pretrained, median(seconds) AS seconds FROM rows WHERE error IS NULL GROUP BY ALL
"""
SECONDS_SQL = "SELECT min(seconds) FILTER (WHERE seconds > 0) AS low, max(seconds) AS high FROM rows WHERE error IS NULL"
LOSS_SQL = """
WITH steps AS (
    SELECT run, method, model, pretrained, unnest(range(1, len(losses) + 1)) AS step, unnest(losses) AS v
    FROM rows WHERE len(losses) > 0)
SELECT run, method, model, pretrained, step, quantile_cont(v, [0.25, 0.5, 0.75]) AS q, min(v) AS low
FROM steps WHERE isfinite(v) GROUP BY ALL ORDER BY step
"""
CURVES_SQL = """
SELECT run, method, model, pretrained, losses,
       count(*) OVER (PARTITION BY run, method, model, pretrained) AS n
FROM rows WHERE len(losses) > 0
QUALIFY row_number() OVER (PARTITION BY run, method, model, pretrained ORDER BY task, sample_id) <= ?
"""


def _lines(rowset: RowSet, frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """The (method, model, pretrained, run) lines present in `frame`, in the report's order."""
    present = set(zip(frame["method"], frame["model"], frame["pretrained"], frame["run"]))
    return [key for key in line_keys(cells(rowset)) if key in present]


def _line_label(method: str, model: str, pretrained: str, run: str) -> str:
    return _label(method, model, pretrained) + (f" [{run}]" if run else "")


def accuracy_figure(rows: RowSet | pd.DataFrame) -> Figure:
    """One colour and marker shape per method x teacher: a small hollow point per task (accuracy with
    its 95% interval against the median seconds per sample) and a large hollow one for the mean over
    tasks (the legend entry), so the price of each point of accuracy is visible at a glance."""
    rowset = as_rowset(rows)
    fig = Figure(figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    per_task = rowset.query(PER_TASK_SQL)
    per_line = {(r.method, r.model, r.pretrained, r.run): r.seconds for r in rowset.query(PER_LINE_SQL).itertuples()}
    parts = {k: part for k, part in per_task.groupby(["method", "model", "pretrained", "run"], sort=False)}
    for i, key in enumerate(_lines(rowset, per_task)):
        method = key[0]
        colour, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        accs = []
        for r in parts[key].itertuples():
            est = count_estimate(int(r.n), int(r.hits), f"fig|{method}|{r.task}", 0, RESAMPLES)
            ax.errorbar([float(r.seconds)], [est.value], yerr=[[est.value - est.low], [est.high - est.value]],
                        fmt=marker, color=colour, markerfacecolor="none", alpha=0.5, markersize=5, capsize=2,
                        clip_on=False)
            accs.append(est.value)
        # the mean: sizes step down between groups, so hollow outlines at one point nest instead of covering
        ax.plot([float(per_line[key])], [float(np.mean(accs))], marker=marker,
                markersize=15 - 4 * (i % 3), markerfacecolor="none", markeredgewidth=1.5, alpha=0.85, color=colour,
                linestyle="none", clip_on=False, label=_line_label(*key))
    if len(per_task):
        low, high = rowset.query(SECONDS_SQL).iloc[0]
        if pd.notna(low) and high > 10 * low:
            ax.set_xscale("log")
        ax.legend(loc="best", fontsize="small")
    else:
        _empty(ax, "no scored rows")
    ax.set_ylim(*ACCURACY_LIMITS)
    ax.set_xlabel("median seconds per sample")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy against cost (small: per task with 95% interval; large: mean over tasks)", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_seconds(rows: RowSet | pd.DataFrame, path: Path) -> Path:
    """accuracy_figure as a PNG (the figure itself is separate so that tests can read its artists)."""
    return _save(accuracy_figure(rows), path)


def loss_curves(rows: RowSet | pd.DataFrame, path: Path, individual: int = 20) -> Path:
    """Per method x teacher with a recorded trajectory: the median TTT loss per step, the band between
    its quartiles, and up to `individual` single samples' curves, to show how uniform convergence is.
    The quartiles are computed by the query engine, so a run of any size costs one pass."""
    rowset = as_rowset(rows)
    fig = Figure(figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    quartiles = rowset.query(LOSS_SQL)
    curves = rowset.query(CURVES_SQL, [individual])
    by_line = {k: part for k, part in quartiles.groupby(["method", "model", "pretrained", "run"], sort=False)}
    singles = {k: part for k, part in curves.groupby(["method", "model", "pretrained", "run"], sort=False)}
    for i, key in enumerate(_lines(rowset, quartiles)):
        colour, part = f"C{i % 10}", by_line[key]
        steps = part["step"].to_numpy()
        low, mid, high = (np.array([q[j] for q in part["q"]]) for j in range(3))
        for losses in singles[key]["losses"]:
            ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, dtype=np.float64), color=colour, alpha=0.15,
                    linewidth=0.8)
        ax.fill_between(steps, low, high, color=colour, alpha=0.2)
        n = int(singles[key]["n"].iloc[0])
        ax.plot(steps, mid, color=colour, linewidth=2, label=f"{_line_label(*key)}, n={n}")
    if len(quartiles):
        if quartiles["low"].min() > 0:
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    else:
        _empty(ax, "no rows with a TTT loss trajectory")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("TTT step")
    ax.set_ylabel("loss before the update")
    ax.set_title("TTT loss: median, quartiles and single samples", fontsize="medium")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def run_figures(rows: RowSet | pd.DataFrame, out_dir: Path) -> list[Path]:
    return [accuracy_vs_seconds(rows, out_dir / "accuracy_vs_seconds.png"), loss_curves(rows, out_dir / "ttt_loss.png")]


def pca_colours(features: np.ndarray, grid: int) -> np.ndarray:
    """(G, D) features -> (grid, grid, 3) colours in [0, 1]: the first three principal components, each
    stretched between its 1st and 99th percentile. Locations the network treats alike get alike colours,
    which is what an island of agreement is. Signs are fixed (largest score positive) for stable colours."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    scores = u[:, :3] * s[:3]
    if scores.shape[1] < 3:
        scores = np.pad(scores, ((0, 0), (0, 3 - scores.shape[1])))
    out = np.full_like(scores, 0.5)
    for k in range(3):
        col = scores[:, k]
        if col[np.argmax(np.abs(col))] < 0:
            col = -col
        low, high = np.percentile(col, [1, 99])
        if high - low > 1e-12:
            out[:, k] = np.clip((col - low) / (high - low), 0.0, 1.0)
    return out.reshape(grid, grid, 3)


def islands_figure(image: np.ndarray, snapshots: dict[int, np.ndarray], grid: int, path: Path, title: str = "") -> Path:
    """The input image, then one panel per TTT step in `snapshots` (step -> (G, D) features)."""
    steps = sorted(snapshots)
    panels = 1 + len(steps)
    fig = Figure(figsize=(ISLAND_PANEL[0] * panels, ISLAND_PANEL[1]), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize="small")
    for ax, step in zip(axes[1:], steps):
        ax.imshow(pca_colours(snapshots[step], grid), interpolation="nearest")
        ax.set_title(f"step {step}", fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize="small")
    return _save(fig, path)
