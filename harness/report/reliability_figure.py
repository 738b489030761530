"""Reliability diagrams: per method (an attacked one apart, as every table shows it), its
in-distribution rows pooled over tasks and binned by confidence (trust_metrics' 20 bins), each bin's
accuracy against its mean confidence, with the diagonal of perfect calibration and the pooled ECE in
the panel's title (pooled: the trust table's ECE is the mean of each task's). The tallies are computed in
the database (a count, a confidence sum and a hit count per bin), so any number of rows draws in
bounded memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.report.png import DPI, save_png
from harness.report.rowset import RowSet, as_rowset
from harness.report.trust_metrics import ECE_BINS

PANEL = (2.6, 2.6)
COLUMNS = 4
BINS_SQL = f"""
WITH scored AS (
    SELECT method, model, pretrained, confidence, correct::DOUBLE AS hit,
           least(greatest(ceil(confidence * {ECE_BINS}) - 1, 0), {ECE_BINS - 1})::INTEGER AS bin
    FROM rows WHERE error IS NULL AND confidence IS NOT NULL AND correct IS NOT NULL)
SELECT method, model, pretrained, bin, count(*) AS n, avg(confidence) AS confidence, avg(hit) AS accuracy,
       sum(confidence - hit) AS gap
FROM scored GROUP BY ALL ORDER BY method, model, pretrained, bin
"""
"""The bin by ceil(c x 20) - 1: the same bins as trust_metrics.bin_index up to the rounding of c x 20
at an exact edge, which moves a bar by no visible amount (the tables' ECE uses the exact edges)."""


def reliability_bins(rows: RowSet | pd.DataFrame) -> pd.DataFrame:
    return as_rowset(rows).query(BINS_SQL)


def reliability_figure(rows: RowSet | pd.DataFrame) -> Figure | None:
    """One panel per (method, teacher); None when no row carries a confidence."""
    frame = reliability_bins(rows)
    if frame.empty:
        return None
    groups = list(frame.groupby(["method", "model", "pretrained"], sort=False))
    teachers = frame[["model", "pretrained"]].drop_duplicates()
    columns = min(COLUMNS, len(groups))
    lines = math.ceil(len(groups) / columns)
    fig = Figure(figsize=(PANEL[0] * columns, PANEL[1] * lines + 0.4), dpi=DPI, layout="constrained")
    width = 1.0 / ECE_BINS
    for i, ((method, model, pretrained), part) in enumerate(groups):
        ax = fig.add_subplot(lines, columns, i + 1)
        lefts = part["bin"].to_numpy() * width
        ax.bar(lefts, part["accuracy"], width=width, align="edge", edgecolor="black", linewidth=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
        ax.plot(part["confidence"], part["accuracy"], ".", color="crimson", markersize=3)
        pooled_ece = 100.0 * float(np.abs(part["gap"]).sum() / part["n"].sum())
        title = method + (f" ({model}/{pretrained})" if len(teachers) > 1 else "")
        ax.set_title(f"{title}\npooled ECE {pooled_ece:.1f}%, n={int(part['n'].sum())}", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize="small")
        if i % columns == 0:
            ax.set_ylabel("accuracy", fontsize="small")
        ax.tick_params(labelsize="x-small")
    fig.suptitle("Reliability: accuracy per confidence bin (bars), mean confidence (dots), pooled over tasks",
                 fontsize="medium")
    return fig


def reliability_diagram(rows: RowSet | pd.DataFrame, path: Path) -> Path | None:
    return save_png(reliability_figure(rows), path)
