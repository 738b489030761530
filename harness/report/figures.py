"""PNG figures from a run's rows (accuracy against seconds per sample, TTT loss curves) and the
islands-of-agreement view (per-location features projected to 3 colours, side by side over TTT).

Figures are drawn on matplotlib's object API (no pyplot state, no display needed) at fixed sizes, so
a figure's pixel size is known in advance and tests can check it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation

from harness.report.accuracy import cells
from harness.report.paper import count_estimate, line_keys
from harness.report.rowset import RowSet, as_rowset
from harness.report.stats import RESAMPLES
from harness.report.png import DPI, save_png
from harness.report.reliability_figure import reliability_diagram
from harness.report.stream_figure import stream_curves
from harness.report.tables import method_label, teacher_label

RUN_FIGSIZE = (8, 5)
"""Inches: the accuracy figure is 800 x 500 pixels, the loss figure 800 wide and as tall as its panels need (loss_size)."""
ISLAND_PANEL = (2.5, 3)
"""Inches per panel of the islands figure: (panels x 250) x 300 pixels."""


def _save(fig: Figure, path: Path) -> Path:
    return save_png(fig, path)  # type: ignore[return-value]


def _label(method: str, model: str, pretrained: str) -> str:
    return f"{method_label(method)} ({teacher_label(model, pretrained)})"


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
"""One shape per method x teacher (with its colour), drawn hollow: two methods at the same point (both
100% at the same cost, say) stay visible as two outlines instead of one hiding the other. Twelve, so
the eleven built-in methods of one teacher never share colour and shape (colours repeat after ten)."""
ACCURACY_LIMITS = (-4.0, 104.0)
ACCURACY_TICKS = tuple(range(0, 101, 20))
"""The accuracy axis is ticked 0-100 % (no 104 % tick), with room beyond both ends for the largest
marker's radius, so a point at 100 % (or 0 %) is drawn whole inside the axes, not cut by its edge."""
DODGE = 9.0
"""Points between methods drawn side by side at one cost."""
SAME_COST = 0.03
"""Costs closer than this share of the axis's span count as the same place."""
LOSS_COLUMNS = 3
LOSS_ROW_HEIGHT = 2.8
"""Inches per row of loss panels."""


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


def _line_label(method: str, model: str, pretrained: str, run: str, teacher: bool = True) -> str:
    """The method's label, with the teacher where a figure shows several, and the run where runs are
    side by side."""
    return (_label(method, model, pretrained) if teacher else method_label(method)) + (f" [{run}]" if run else "")


def _teachers(keys: list[tuple[str, str, str, str]]) -> list[str]:
    return list(dict.fromkeys(teacher_label(model, pretrained) for _, model, pretrained, _ in keys))


def dodge(positions: list[float], spread: float) -> list[float]:
    """Horizontal offsets in points, one per position (in the axis's own scale: log10 seconds on a log
    axis): positions closer than SAME_COST of `spread` form a group, drawn side by side DODGE points
    apart around their true place, in the given order. Methods that cost the same (zero-shot and the
    ensemble, whose per-sample time is one teacher pass) are then told apart, while their data
    coordinates, and what a reader measures off the axis, stay exact."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and positions[i] - positions[groups[-1][0]] <= SAME_COST * max(spread, 1e-12):
            groups[-1].append(i)
        else:
            groups.append([i])
    out = [0.0] * len(positions)
    for group in groups:
        for j, i in enumerate(sorted(group)):
            out[i] = (j - (len(group) - 1) / 2) * DODGE
    return out


def accuracy_figure(rows: RowSet | pd.DataFrame) -> Figure:
    """One colour and marker shape per method x teacher: a small hollow point per task (accuracy with
    its 95% interval against the median seconds per sample) and a large hollow one for the mean over
    tasks (the legend entry), so the price of each point of accuracy is visible at a glance. The legend
    sits outside the axes; the accuracy axis has room above 100 % so a marker there is drawn whole."""
    rowset = as_rowset(rows)
    fig = Figure(figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    per_task = rowset.query(PER_TASK_SQL)
    per_line = {(r.method, r.model, r.pretrained, r.run): r.seconds for r in rowset.query(PER_LINE_SQL).itertuples()}
    parts = {k: part for k, part in per_task.groupby(["method", "model", "pretrained", "run"], sort=False)}
    keys = _lines(rowset, per_task)
    teachers = _teachers(keys)
    log = False
    if len(per_task):
        low, high = rowset.query(SECONDS_SQL).iloc[0]
        log = bool(pd.notna(low) and high > 10 * low)
    where = [float(np.log10(max(per_line[k], 1e-9)) if log else per_line[k]) for k in keys]
    offsets = dodge(where, (max(where) - min(where)) if where else 0.0)
    seen: list[tuple[float, float]] = []
    """Data points drawn: artists in shifted coordinates do not widen the axes' limits themselves."""
    for i, key in enumerate(keys):
        colour, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        shifted = ax.transData + ScaledTranslation(offsets[i] / 72, 0, fig.dpi_scale_trans)
        accs = []
        for r in parts[key].itertuples():
            est = count_estimate(int(r.n), int(r.hits), f"fig|{key[0]}|{r.task}", 0, RESAMPLES)
            ax.vlines([float(r.seconds)], [est.low], [est.high], colors=colour, alpha=0.4, linewidth=1,
                      transform=shifted)
            ax.plot([float(r.seconds)], [est.value], marker=marker, color=colour, markerfacecolor="none", alpha=0.5,
                    markersize=5, linestyle="none", transform=shifted)
            accs.append(est.value)
            seen.append((float(r.seconds), est.value))
        # the mean: sizes step down between groups, so hollow outlines at one point nest instead of covering
        ax.plot([float(per_line[key])], [float(np.mean(accs))], marker=marker,
                markersize=15 - 4 * (i % 3), markerfacecolor="none", markeredgewidth=1.5, alpha=0.85, color=colour,
                linestyle="none", transform=shifted, label=_line_label(*key, teacher=len(teachers) > 1))
    if len(per_task):
        if log:
            ax.set_xscale("log")
        ax.update_datalim(seen)
        ax.margins(x=0.08)
        ax.autoscale_view()
        fig.legend(loc="outside right upper", fontsize="small", title="mean over tasks", title_fontsize="small")
    else:
        _empty(ax, "no scored rows")
    ax.set_ylim(*ACCURACY_LIMITS)
    ax.set_yticks(ACCURACY_TICKS)
    ax.set_xlabel("median seconds per sample")
    ax.set_ylabel("top-1 accuracy (%)")
    teacher = f", teacher {teachers[0]}" if len(teachers) == 1 else ""
    ax.set_title(f"Accuracy against cost{teacher}\nsmall: per task with 95% interval; large: mean over tasks; "
                 "equal costs drawn side by side", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_seconds(rows: RowSet | pd.DataFrame, path: Path) -> Path:
    """accuracy_figure as a PNG (the figure itself is separate so that tests can read its artists)."""
    return _save(accuracy_figure(rows), path)


def loss_size(panels: int) -> tuple[float, float]:
    """Inches of the loss figure: LOSS_COLUMNS panels a row, at least RUN_FIGSIZE tall."""
    rows = max(1, -(-panels // LOSS_COLUMNS))
    return RUN_FIGSIZE[0], max(RUN_FIGSIZE[1], LOSS_ROW_HEIGHT * rows)


def loss_figure(rows: RowSet | pd.DataFrame, individual: int = 20) -> Figure:
    """One panel per method with a recorded trajectory, each on its own scale (TPT's one-step entropy
    and APM's distillation loss have nothing in common but the word loss): per teacher (and run) the
    median TTT loss per step, the band between its quartiles, and up to `individual` single samples'
    curves, to show how uniform convergence is. The quartiles are computed by the query engine, so a
    run of any size costs one pass."""
    rowset = as_rowset(rows)
    quartiles = rowset.query(LOSS_SQL)
    curves = rowset.query(CURVES_SQL, [individual])
    keys = _lines(rowset, quartiles)
    methods = list(dict.fromkeys(k[0] for k in keys))
    fig = Figure(figsize=loss_size(len(methods)), dpi=DPI, layout="constrained")
    if not methods:
        ax = fig.add_subplot()
        _empty(ax, "no rows with a TTT loss trajectory")
        ax.set_title("TTT loss", fontsize="medium")
        return fig
    by_line = {k: part for k, part in quartiles.groupby(["method", "model", "pretrained", "run"], sort=False)}
    singles = {k: part for k, part in curves.groupby(["method", "model", "pretrained", "run"], sort=False)}
    several = len(_teachers(keys)) > 1
    columns = min(len(methods), LOSS_COLUMNS)
    axes = fig.subplots(-(-len(methods) // columns), columns, squeeze=False).ravel()
    for ax, method in zip(axes, methods):
        mine = [k for k in keys if k[0] == method]
        for i, key in enumerate(mine):
            colour, part = f"C{i % 10}", by_line[key]
            steps = part["step"].to_numpy()
            low, mid, high = (np.array([q[j] for q in part["q"]]) for j in range(3))
            dots = "o" if len(steps) <= 2 else None  # a one-step method's loss is a point, not a line
            for losses in singles[key]["losses"]:
                ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, dtype=np.float64), color=colour, alpha=0.15,
                        linewidth=0.8, marker=dots, markersize=3)
            ax.fill_between(steps, low, high, color=colour, alpha=0.2)
            n = int(singles[key]["n"].iloc[0])
            ax.plot(steps, mid, color=colour, linewidth=2, marker=dots, label=f"{_line_label(*key, several)}, n={n}")
        _loss_axes(ax, quartiles[quartiles["method"] == method])
        if len(mine) > 1:
            ax.legend(loc="best", fontsize="x-small")
        ax.set_title(method_label(method) + (f", n={int(singles[mine[0]]['n'].iloc[0])}" if len(mine) == 1 else ""),
                     fontsize="medium")
        ax.set_xlabel("TTT step", fontsize="small")
        ax.set_ylabel("loss before the update", fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[len(methods):]:
        ax.set_axis_off()
    teachers = _teachers(keys)
    fig.suptitle("TTT loss per method, each on its own scale: median, quartiles, single samples"
                 + (f"\nteacher {teachers[0]}" if len(teachers) == 1 else ""), fontsize="medium")
    return fig


def _loss_axes(ax, part: pd.DataFrame) -> None:
    """A log loss axis where every loss is positive, labelled in plain numbers (1, 2, 5 per decade over a
    narrow range, so a panel whose loss moves little still has labels); whole steps, and a step axis
    for a one-step method rather than 0.945 ... 1.05."""
    low, high = float(part["low"].min()), float(max(q[2] for q in part["q"]))
    if low > 0:
        ax.set_yscale("log")
        narrow = high / low < 100
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    last = int(part["step"].max())
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def loss_curves(rows: RowSet | pd.DataFrame, path: Path, individual: int = 20) -> Path:
    return _save(loss_figure(rows, individual), path)


def run_figures(rows: RowSet | pd.DataFrame, out_dir: Path) -> list[Path]:
    """Accuracy against seconds, TTT losses, for online methods accuracy along the stream, and the
    reliability diagrams where rows carry a confidence."""
    along = stream_curves(rows, out_dir / "accuracy_along_stream.png")
    calibration = reliability_diagram(rows, out_dir / "reliability.png")
    return [accuracy_vs_seconds(rows, out_dir / "accuracy_vs_seconds.png"), loss_curves(rows, out_dir / "ttt_loss.png"),
            *([along] if along else []), *([calibration] if calibration else [])]


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, as `_save` writes it (for pages that embed figures as data: URIs)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    return buffer.getvalue()


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
