"""Accuracy along the stream: for each online method, the running top-1 accuracy over the first k
samples of its streams, averaged over the streams (and over the tasks that reach k), with the band
from the worst to the best stream. An online method that learns rises along its stream; one that a
correlated order misleads falls. Computed in the database (a window per stream, then at most
POINTS positions per method), so 100 streams of 50,000 samples draw in bounded memory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.report.png import DPI, save_png
from harness.report.rowset import RowSet, as_rowset

POINTS = 200
"""Positions drawn per line."""
FIGSIZE = (8, 5)
"""800 x 500 pixels, as the other run figures (harness.report.figures)."""
ALONG_SQL = f"""
WITH running AS (
    SELECT method, model, pretrained, task, stream_id, position,
           avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) OVER (
               PARTITION BY method, model, pretrained, task, stream_id ORDER BY position
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS accuracy,
           max(position) OVER (PARTITION BY method, model, pretrained, task, stream_id) AS last
    FROM rows WHERE stream IS NOT NULL AND error IS NULL),
kept AS (SELECT * FROM running WHERE position % greatest(1, (last + 1) // {POINTS}) = 0 OR position = last),
streams AS (SELECT method, model, pretrained, stream_id, position, avg(accuracy) AS accuracy FROM kept GROUP BY ALL)
SELECT method, model, pretrained, position, 100 * avg(accuracy) AS mean, 100 * min(accuracy) AS low,
       100 * max(accuracy) AS high, count(*) AS streams
FROM streams GROUP BY ALL ORDER BY method, model, pretrained, position
"""


def along_stream(rows: RowSet | pd.DataFrame) -> pd.DataFrame:
    return as_rowset(rows).query(ALONG_SQL)


def stream_figure(rows: RowSet | pd.DataFrame) -> Figure | None:
    """None when no row belongs to a stream (no online method ran)."""
    frame = along_stream(rows)
    if frame.empty:
        return None
    teachers = frame[["model", "pretrained"]].drop_duplicates()
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for (method, model, pretrained), line in frame.groupby(["method", "model", "pretrained"], sort=False):
        label = method + (f" ({model}/{pretrained})" if len(teachers) > 1 else "") + f", {int(line['streams'].max())} streams"
        drawn = ax.plot(line["position"] + 1, line["mean"], label=label)
        ax.fill_between(line["position"] + 1, line["low"], line["high"], alpha=0.2, color=drawn[0].get_color(), lw=0)
    ax.set_xlabel("samples seen (position in the stream)")
    ax.set_ylabel("running top-1 accuracy (%)")
    ax.set_title("Accuracy along the stream: mean over streams, band from the worst to the best")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def stream_curves(rows: RowSet | pd.DataFrame, path: Path) -> Path | None:
    return save_png(stream_figure(rows), path)
