"""Online methods over their streams: per (method, teacher, task), each stream's top-1 accuracy, and
over the streams their mean, standard deviation, minimum and expected tail accuracy, the mean of the
worst 10% of streams (OGA, Fuchs et al., CVPR 2025 workshops: the 10 worst of 100 runs; here the worst
ceil(k / 10) of k). An online method's number depends on the order of its stream, so a single stream
says little: the spread and the tail say how much the order moves it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.rowset import RowSet, as_rowset

TAIL = 0.1
"""The share of the worst streams the tail accuracy averages."""
STREAMS_SQL = """
WITH per AS (
    SELECT run, method, model, pretrained, task, stream, stream_id,
           count(*) FILTER (WHERE error IS NULL) AS n,
           count(*) FILTER (WHERE error IS NULL AND coalesce(correct, false)) AS hits
    FROM rows WHERE stream IS NOT NULL GROUP BY ALL)
SELECT run, method, model, pretrained, task, stream, list(100.0 * hits / n ORDER BY stream_id) AS accuracies
FROM per WHERE n > 0 GROUP BY ALL
"""


@dataclass(frozen=True)
class StreamStats:
    run: str
    method: str
    model: str
    pretrained: str
    task: str
    protocol: str
    accuracies: tuple[float, ...]
    """Each stream's top-1 accuracy (%), by stream id."""

    @property
    def streams(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def sd(self) -> float | None:
        """The sample standard deviation over streams (None for one stream)."""
        return float(np.std(self.accuracies, ddof=1)) if self.streams > 1 else None

    @property
    def worst(self) -> float:
        return float(min(self.accuracies))

    @property
    def tail(self) -> float:
        """Expected tail accuracy: the mean of the worst ceil(TAIL x k) streams."""
        k = max(1, math.ceil(TAIL * self.streams))
        return float(np.mean(sorted(self.accuracies)[:k]))


def stream_stats(rows: RowSet | pd.DataFrame) -> list[StreamStats]:
    """One entry per (run, method, teacher, task) with stream rows, in the rows' order of methods and tasks."""
    rowset = as_rowset(rows)
    frame = rowset.query(STREAMS_SQL)
    orders = rowset.orders
    out = [StreamStats(str(r.run), r.method, r.model, r.pretrained, r.task, r.stream, tuple(float(a) for a in r.accuracies))
           for r in frame.itertuples()]
    return sorted(out, key=lambda s: (orders.rank("teachers", (s.model, s.pretrained)), orders.rank("methods", s.method),
                                      orders.rank("runs", s.run), orders.rank("tasks", s.task)))


HEADERS = ("method", "task", "stream", "streams", "mean", "sd", "min", "tail")
TITLE = "Online methods over their streams: top-1 accuracy (%) per stream"
LEGEND = ("mean, sd and min over the streams; tail: expected tail accuracy, the mean of the worst 10% of streams "
          "(at least one). The tables above pool every stream's rows: the same mean, with an interval over samples.")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def stream_lines(stats: list[StreamStats]) -> list[list[str]]:
    """The table's body as text, one line per entry (the run in brackets where runs are side by side)."""
    return [[s.method + (f" [{s.run}]" if s.run else ""), s.task, s.protocol, str(s.streams), _number(s.mean),
             _number(s.sd), _number(s.worst), _number(s.tail)] for s in stats]
