"""The plain report (no `--table`) as data: one pivot per metric (method x task, with n, intervals and
an Average), the long form for CSV and JSON, and the markers of unfinished runs. render.py turns it
into text; the HTML page reads the same objects, so no renderer parses numbers back out of text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.accuracy import COUNTS, GROUP, METRICS, cells
from harness.report.progress import NO_PROGRESS, CellProgress, Progress
from harness.report.rowset import RowSet
from harness.report.stats import RESAMPLES, Estimate, cell_key, estimate_counts, mean_of
from harness.report.streams import StreamStats, stream_stats
from harness.report.values import Cell

KINDS = {"accuracy": "top1", "top5_accuracy": "top5"}
"""The statistic's name in a cell's generator key (stats.cell_key), shared with the paper layouts."""
RECORD_COLUMNS = ["run", "method", "model", "pretrained", "task", "n", "correct", "accuracy", "accuracy_low",
                  "accuracy_high", "top5_n", "top5_correct", "top5_accuracy", "top5_accuracy_low", "top5_accuracy_high",
                  "mean_per_class_recall", "errors", "finished", "missing", "status", "streams", "stream_sd",
                  "stream_min", "stream_tail"]
"""CSV and JSON: `run` is the run ids the cell's rows come from, `;`-joined where runs are pooled (run
ids are letters, digits, `.`, `_`, `+`, `-`); the bounds are the 95% interval; `finished`, `missing`
and `status` say whether the cell's runs have all of its task's samples (harness.report.progress); an online
method's cell adds its streams, their standard deviation, minimum and tail accuracy (harness.report.streams)."""


@dataclass(frozen=True)
class PivotLine:
    label: str
    """What the method column shows: the method, with the run and teacher where needed."""
    run: str
    """The run id where runs are side by side; "" where pooled."""
    method: str
    model: str
    pretrained: str
    cells: tuple[Cell, ...]
    """One per task of the pivot, then its Average where it has one."""
    errors: int


@dataclass(frozen=True)
class Pivot:
    metric: str
    title: str
    tasks: tuple[str, ...]
    average: bool
    """An Average column (more than one task)."""
    errors: bool
    """An errors column (some line has error rows)."""
    lines: tuple[PivotLine, ...]

    @property
    def headers(self) -> tuple[str, ...]:
        return ("method", *self.tasks) + (("Average",) if self.average else ()) + (("errors",) if self.errors else ())


@dataclass(frozen=True)
class PlainReport:
    pivots: tuple[Pivot, ...]
    """Top-1, top-5, mean per-class recall, in that order."""
    records: tuple[dict, ...]
    """The long form, one per (line, task), in RECORD_COLUMNS."""
    unfinished: tuple[str, ...]
    """One marker per unfinished run: printed in the body of every format."""
    notes: tuple[str, ...]
    """What was read and how (harness.report.inputs)."""
    seed: int
    resamples: int
    streams: tuple[StreamStats, ...] = ()
    """The online methods' accuracy per stream, with mean, spread and tail."""


def _estimate(row: object, metric: str, seed: int, resamples: int) -> Estimate | None:
    """The cell's value with a bootstrap interval where the metric is a mean of 0/1 outcomes; None
    where it does not apply (top-5 below 5 classes)."""
    if pd.isna(getattr(row, metric)):
        return None
    if metric not in COUNTS:
        return Estimate(float(getattr(row, metric)), None, None, int(row.n))  # type: ignore[attr-defined]
    trials, hits = (int(getattr(row, c)) for c in COUNTS[metric])
    key = cell_key(KINDS[metric], row.task, row.method, row.model, row.pretrained, int(row.ids))  # type: ignore[attr-defined]
    return estimate_counts(np.array([0.0, 1.0]), np.array([trials - hits, hits]), key, seed, resamples)


def _cell(row: object | None, est: Estimate | None, state: CellProgress) -> Cell:
    marks = dict(finished=state.finished, missing=state.missing, status=state.status)
    if row is None or not row.n:  # type: ignore[attr-defined]
        return Cell(None, errors=int(row.errors) if row is not None else 0, runs=getattr(row, "runs", ()), **marks)
    runs, errors = tuple(row.runs), int(row.errors)  # type: ignore[attr-defined]
    if est is None:
        return Cell(None, n=int(row.n), errors=errors, note="n/a", runs=runs, **marks)  # type: ignore[attr-defined]
    return Cell(est.value, est.low, est.high, est.n, errors, runs=runs, **marks)


def _average(cells_: list[Cell], estimates: list[Estimate | None], metric: str, progress: Progress) -> Cell:
    """The unweighted mean over the tasks where the metric applies; blank unless every one of them is
    complete and has data."""
    kept = [(c, e) for c, e in zip(cells_, estimates) if c.note != "n/a"]
    if not kept:
        return Cell(None, note="n/a")
    state = progress.combine(CellProgress(c.finished, c.missing, c.status) for c, _ in kept)
    runs = tuple(sorted({r for c, _ in kept for r in c.runs}))
    marks = dict(runs=runs, finished=state.finished, missing=state.missing, status=state.status)
    present = [e for c, e in kept if c.value is not None and e is not None]
    if not state.complete:
        return Cell(None, note="not finished", **marks)
    if len(present) < len(kept):
        return Cell(None, note=f"{len(present)}/{len(kept)} tasks", **marks)
    n = sum(c.n for c, _ in kept)
    if metric in COUNTS:
        mean = mean_of(present)
        return Cell(mean.value, mean.low, mean.high, n, **marks) if mean is not None else Cell(None, **marks)
    return Cell(float(np.mean([e.value for e in present])), n=n, **marks)


def build_plain(rows: RowSet | pd.DataFrame, seed: int = 0, resamples: int = RESAMPLES,
                progress: Progress = NO_PROGRESS, notes: tuple[str, ...] = ()) -> PlainReport:
    """Rows = method (with the run where runs are side by side, and the teacher when teachers are
    mixed), columns = tasks in order of appearance and their unweighted Average."""
    long = cells(rows)
    tasks = tuple(dict.fromkeys(long["task"]))
    label_teacher = len(long[["model", "pretrained"]].drop_duplicates()) > 1
    has_errors = bool(long["errors"].sum()) if len(long) else False
    groups = [(key, {r.task: r for r in group.itertuples()}) for key, group in long.groupby(GROUP, sort=False)]
    states = {}  # (run, method, model, pretrained, task) -> how complete; a cell without rows: its line's run
    for key, by_task in groups:
        run = key[0]
        for task in tasks:
            row = by_task.get(task)
            states[(*key, task)] = progress.cell(task, row.runs if row is not None else ((run,) if run else ()))
    pivots, estimates = [], {}
    for metric, title in METRICS.items():
        lines = []
        for (run, method, model, pretrained), by_task in groups:
            ests = [None if (r := by_task.get(t)) is None or not r.n else _estimate(r, metric, seed, resamples)
                    for t in tasks]
            line_cells = [_cell(by_task.get(t), e, states[(run, method, model, pretrained, t)])
                          for t, e in zip(tasks, ests)]
            estimates.update({(run, method, model, pretrained, t, metric): e for t, e in zip(tasks, ests)})
            if len(tasks) > 1:
                line_cells.append(_average(line_cells, ests, metric, progress))
            label = method + (f" [{run}]" if run else "") + (f" ({model}/{pretrained})" if label_teacher else "")
            errors = sum(int(r.errors) for r in by_task.values())
            lines.append(PivotLine(label, run, method, model, pretrained, tuple(line_cells), errors))
        pivots.append(Pivot(metric, title, tasks, len(tasks) > 1, has_errors, tuple(lines)))
    streams = stream_stats(rows)
    by_cell = {(s.run, s.method, s.model, s.pretrained, s.task): s for s in streams}
    records = tuple(_record(r, estimates, states, by_cell) for r in long.itertuples())
    return PlainReport(tuple(pivots), records, progress.markers(), notes, seed, resamples, tuple(streams))


def _record(row: object, estimates: dict, states: dict, streams: dict) -> dict:
    key = (row.run, row.method, row.model, row.pretrained, row.task)  # type: ignore[attr-defined]
    state = states[key]
    out = {c: getattr(row, c) for c in RECORD_COLUMNS if hasattr(row, c)}
    out["run"] = ";".join(row.runs)  # type: ignore[attr-defined]
    for metric in COUNTS:
        est = estimates.get((*key, metric))
        out[f"{metric}_low"] = est.low if est is not None else None
        out[f"{metric}_high"] = est.high if est is not None else None
    out.update(finished=state.finished, missing=state.missing, status=state.status)
    found = streams.get(key)
    out.update(streams=found.streams if found else None, stream_sd=found.sd if found else None,
               stream_min=found.worst if found else None, stream_tail=found.tail if found else None)
    return {c: out[c] for c in RECORD_COLUMNS}
