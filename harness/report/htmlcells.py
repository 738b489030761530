"""The report objects as HTML grids (htmltable.Grid): a paper layout's three tables from its
paper.PaperReport, the plain method x task pivots from plain.PlainReport. Numbers, intervals, counts
and completeness come from their cells (values.Cell) as they are; only how each reads on a page is
decided here: the value large, its interval small below it, n, error rows and what an unfinished run
misses on hover."""

from __future__ import annotations

from harness.report.cost import CostLine
from harness.report.htmltable import Column, Entry, Grid, Record, abbreviate
from harness.report.paper import Line, PaperReport
from harness.report.streams import HEADERS as STREAM_HEADERS
from harness.report.streams import LEGEND as STREAMS_LEGEND
from harness.report.streams import TITLE as STREAMS_TITLE
from harness.report.streams import StreamStats, stream_lines
from harness.report.plain import Pivot, PlainReport
from harness.report.tables import BASELINE, TableSpec, method_label, teacher_label
from harness.report.values import Cell

HOVER_NOTE = ("Below each value: its 95% bootstrap interval. On hover: n (scored samples), error rows, and "
              "the full name of a column.")
BEST_NOTE = "Bold on green: the best value of its column among the measured rows of one teacher."
OPEN_NOTE = "Amber: a cell whose run is not finished (it misses samples; hover for how many)."


def _interval(low: float | None, high: float | None, signed: bool, bracket: bool = False) -> str:
    """`66.0–70.2` below a value (`-0.4…+2.8` for a difference, where a dash would read as minus;
    nothing where every resample agreed, as for 100% of 6); `[66.0, 70.2]` in a hover text."""
    if low is None or high is None or (low == high and not bracket):  # no spread: nothing to add below
        return ""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    a, b = fmt.format(low), fmt.format(high)
    return f"[{a}, {b}]" if bracket else f"{a}…{b}" if signed else f"{a}–{b}"


def _counts(cell: Cell) -> str:
    parts = [f"n={cell.n}"]
    if cell.errors:
        parts.append(f"{cell.errors} error rows left out")
    if cell.unpaired:
        parts.append(f"{cell.unpaired} sample ids unpaired")
    return ", ".join(parts)


def _open(cell: Cell, entry: Entry) -> Entry:
    """An unfinished cell keeps its numbers, marked, with what is missing on hover."""
    if cell.finished is not False:
        return entry
    tip = "; ".join(t for t in (entry.tip, cell.status or "not finished") if t)
    return Entry(entry.text, entry.sub, tip, entry.value, " ".join(t for t in (entry.tone, "open") if t))


def _open_note(records: tuple[Record, ...]) -> tuple[str, ...]:
    """The amber legend, where some cell is amber."""
    return (OPEN_NOTE,) if any("open" in e.tone.split() for r in records for e in r.entries) else ()


def cell_entry(kind: str, cell: Cell, header: str) -> Entry:
    """How a cell reads, by its line's kind: measured (accuracy), paper (the paper's number),
    vs-paper (ours minus the paper's) or paired (a method minus zero-shot, in points)."""
    if kind == "paper":
        stated = f"stated {cell.stated:.1f}" if cell.stated is not None else ""
        return Entry(f"{cell.value:.1f}", stated, f"{header}: the paper's value" + (f" ({stated})" if stated else ""))
    if kind == "vs-paper":
        if cell.value is None:
            return _open(cell, Entry("–", tone="nodata"))
        return _open(cell, Entry(f"{cell.value:+.1f}", tip=f"{header}: ours minus the paper's, in points"))
    signed = kind == "paired"
    if cell.value is None:
        if cell.note == "n/a":
            return Entry("n/a", tip=f"{header}: the metric does not apply (fewer than 5 classes)", tone="nodata")
        sub = cell.note or ("n=0" + (f", {cell.unpaired} unpaired" if cell.unpaired else ""))
        return _open(cell, Entry("–", sub, f"{header}: no value" + (f" ({cell.note})" if cell.note else ""),
                                 tone="nodata"))
    text = f"{cell.value:+.1f}" if signed else f"{cell.value:.1f}"
    interval = _interval(cell.low, cell.high, signed)
    what = "difference in points" if signed else "%"
    tip = (f"{header}: {text} {what}" + (f", 95% interval {_interval(cell.low, cell.high, signed, True)}"
                                         if interval else "") + (f"; {_counts(cell)}" if cell.n else ""))
    tone = ""
    if signed and cell.low is not None and cell.high is not None:
        tone = "up" if cell.low > 0 else "down" if cell.high < 0 else ""
    return _open(cell, Entry(text, interval, tip, cell.value, tone))


def _columns(spec: TableSpec) -> tuple[Column, ...]:
    header_of = {c.task: c.header for c in spec.columns}
    full = [f"{c.header} (task {c.task})" for c in spec.columns]
    full += [f"{s.header}: unweighted mean of {', '.join(header_of[t] for t in s.tasks)}" for s in spec.summaries]
    return tuple(Column(s, f) for s, f in zip(abbreviate(spec.headers), full))


def _records(lines: tuple[Line, ...], spec: TableSpec) -> tuple[Record, ...]:
    return tuple(
        Record(line.label, tuple(cell_entry(line.kind, c, h) for c, h in zip(line.cells, spec.headers)),
               group=line.teacher, kind=line.kind, ranked=line.kind in ("measured", "paired"),
               tip=f"{line.method} on {line.model}/{line.pretrained}" if line.model else "")
        for line in lines)


COST_COLUMNS = (("n", "n", "scored rows"), ("errors", "errors", "error rows"),
                ("seconds", "s/sample", "median wall seconds per sample"),
                ("steps", "TTT steps", "median TTT steps per sample"),
                ("flops", "FLOPs", "median FLOPs per sample"),
                ("peak_memory", "peak mem", "largest peak device memory of a sample (CUDA only)"))


def _cost_text(field: str, value: float | int | None) -> str:
    if value is None:
        return "not recorded" if field in ("flops", "peak_memory") else "–"
    return {"seconds": f"{value:.3f}", "flops": f"{value / 1e9:.2f} G",
            "peak_memory": f"{value / 2**20:.1f} MiB"}.get(field, f"{value:g}")


def cost_grid(cost: tuple[CostLine, ...], notes: tuple[str, ...]) -> Grid:
    columns = tuple(Column(short, full) for _, short, full in COST_COLUMNS)
    records = tuple(Record(c.label, tuple(Entry(_cost_text(f, getattr(c, f)),
                                                tone="" if getattr(c, f) is not None else "nodata")
                                          for f, _, _ in COST_COLUMNS), group=c.teacher, kind="cost")
                    for c in cost)
    return Grid("cost", "Cost per sample", columns, records, best=None, notes=notes)


def paper_grids(report: PaperReport) -> tuple[Grid, Grid, Grid]:
    """The layout's accuracy table, the paired differences against zero-shot, and the cost table."""
    spec = report.spec
    columns = _columns(spec)
    base = f"{method_label(BASELINE)} ({BASELINE})"
    records = _records(report.lines, spec)
    main = Grid("accuracy", spec.title, columns, records, notes=(HOVER_NOTE, BEST_NOTE, *_open_note(records),
                                                                 *report.notes))
    paired_notes = report.paired_notes if report.paired else ("No method besides zero-shot to pair.",)
    paired = Grid("paired", f"Paired difference vs {base} of the same teacher, on the same sample ids (points)",
                  columns, _records(report.paired, spec),
                  notes=("Green: the 95% interval lies above zero; red: below zero.", *paired_notes))
    return main, paired, cost_grid(report.cost, report.cost_notes)


def pivot_grid(pivot: Pivot) -> Grid:
    """One metric's method x task pivot; the errors column where a line has error rows."""
    columns = [Column(s, f"task {t}") for s, t in zip(abbreviate(pivot.tasks), pivot.tasks)]
    if pivot.average:
        columns.append(Column("Average", "unweighted mean over the tasks where the metric applies"))
    headers = [*pivot.tasks, "Average"]
    records = []
    for line in pivot.lines:
        entries = [cell_entry("measured", c, h) for c, h in zip(line.cells, headers)]
        if pivot.errors:
            entries.append(Entry(str(line.errors), tip="error rows, left out of every cell",
                                 tone="" if line.errors else "nodata"))
        records.append(Record(line.method + (f" [{line.run}]" if line.run else ""), tuple(entries),
                              group=teacher_label(line.model, line.pretrained), kind="measured", ranked=True,
                              tip=f"{line.method} on {line.model}/{line.pretrained}"))
    if pivot.errors:
        columns.append(Column("errors", "error rows of the line, left out of every cell"))
    return Grid(pivot.metric.replace("_", "-"), pivot.title, tuple(columns), tuple(records))


def stream_grid(streams: tuple[StreamStats, ...]) -> Grid:
    """The online methods' accuracy over their streams (harness.report.streams), one line per task."""
    columns = tuple(Column(h, full) for h, full in zip(STREAM_HEADERS[1:], (
        "the task", "the stream protocol", "streams run", "mean accuracy over the streams",
        "standard deviation over the streams", "the worst stream", "mean of the worst 10% of streams")))
    records = tuple(Record(line[0], tuple(Entry(text) for text in line[1:]),
                           group=teacher_label(stats.model, stats.pretrained), kind="measured")
                    for stats, line in zip(streams, stream_lines(list(streams))))
    return Grid("streams", STREAMS_TITLE, columns, records, best=None, notes=(STREAMS_LEGEND,))


def plain_grids(report: PlainReport) -> list[Grid]:
    """One grid per metric, top-1 first; how to read a cell, and what was read, under the first; the
    online methods' streams last."""
    grids = [pivot_grid(p) for p in report.pivots] + ([stream_grid(report.streams)] if report.streams else [])
    if grids:
        first = grids[0]
        grids[0] = Grid(first.anchor, first.caption, first.columns, first.records, first.best,
                        (HOVER_NOTE, BEST_NOTE, *_open_note(first.records)))
    return grids
