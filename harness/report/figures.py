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

from harness.report.paper import GROUP_KEYS, groups_in_order, outcomes
from harness.report.stats import estimate
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


def accuracy_figure(rows: pd.DataFrame) -> Figure:
    """One colour and marker shape per method x teacher: a small hollow point per task (accuracy with
    its 95% interval against the median seconds per sample) and a large hollow one for the mean over
    tasks (the legend entry), so the price of each point of accuracy is visible at a glance."""
    fig = Figure(figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    scored = rows[rows["error"].isna()]
    parts = dict(iter(scored.groupby(GROUP_KEYS, sort=False))) if len(scored) else {}
    for i, (method, model, pretrained) in enumerate(groups_in_order(scored)):
        colour, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        frame = parts[(method, model, pretrained)]
        accs = []
        for task, part in frame.groupby("task", sort=False):
            est = estimate(outcomes(part), f"fig|{method}|{task}")
            x = float(part["seconds"].median())
            ax.errorbar([x], [est.value], yerr=[[est.value - est.low], [est.high - est.value]], fmt=marker,
                        color=colour, markerfacecolor="none", alpha=0.5, markersize=5, capsize=2, clip_on=False)
            accs.append(est.value)
        # the mean: sizes step down between groups, so hollow outlines at one point nest instead of covering
        ax.plot([float(np.median(frame["seconds"]))], [float(np.mean(accs))], marker=marker,
                markersize=15 - 4 * (i % 3), markerfacecolor="none", markeredgewidth=1.5, alpha=0.85, color=colour,
                linestyle="none", clip_on=False, label=_label(method, model, pretrained))
    if len(scored):
        positive = scored["seconds"][scored["seconds"] > 0]
        if len(positive) and positive.max() > 10 * positive.min():
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


def accuracy_vs_seconds(rows: pd.DataFrame, path: Path) -> Path:
    """accuracy_figure as a PNG (the figure itself is separate so that tests can read its artists)."""
    return _save(accuracy_figure(rows), path)


def loss_curves(rows: pd.DataFrame, path: Path, individual: int = 20) -> Path:
    """Per method x teacher with a recorded trajectory: the median TTT loss per step, the band between
    its quartiles, and up to `individual` single samples' curves, to show how uniform convergence is."""
    fig = Figure(figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    with_losses = rows[rows["losses"].map(lambda x: x is not None and len(x) > 0).astype(bool)]  # bool: keeps columns when empty
    all_positive = True
    parts = dict(iter(with_losses.groupby(GROUP_KEYS, sort=False))) if len(with_losses) else {}
    for i, (method, model, pretrained) in enumerate(groups_in_order(with_losses)):
        colour = f"C{i % 10}"
        frame = parts[(method, model, pretrained)]
        curves = [np.asarray(x, dtype=np.float64) for x in frame["losses"]]
        length = max(len(c) for c in curves)
        stacked = np.full((len(curves), length), np.nan)
        for j, c in enumerate(curves):
            stacked[j, : len(c)] = c
        steps = np.arange(1, length + 1)
        for c in curves[:individual]:
            ax.plot(np.arange(1, len(c) + 1), c, color=colour, alpha=0.15, linewidth=0.8)
        low, mid, high = np.nanpercentile(stacked, [25, 50, 75], axis=0)
        ax.fill_between(steps, low, high, color=colour, alpha=0.2)
        ax.plot(steps, mid, color=colour, linewidth=2, label=f"{_label(method, model, pretrained)}, n={len(curves)}")
        all_positive &= bool(np.nanmin(stacked) > 0)
    if len(with_losses):
        if all_positive:
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


def run_figures(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
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
