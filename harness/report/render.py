"""Tables to text. Without a paper layout: the plain report (harness.report.plain: method x task
pivots, with n, for top-1, top-5 and mean per-class recall) as markdown (tables under about 160
characters, split by columns beyond), LaTeX (harness.report.latex: escaped, fitted to the page), HTML
(harness.report.page), CSV and JSON (long form, every cell, with its interval, run ids and whether its
runs finished). An unfinished run is said at the top of every format's body. With a layout
(`--table`), render_paper.py does the paper's tables; `render_table` is its entry."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness.registry import Registry
from harness.report import latex as tex
from harness.report import markdown as md
from harness.report.celltext import Parts, plain_parts
from harness.report.page import plain_page
from harness.report.plain import RECORD_COLUMNS, Pivot, PlainReport, build_plain
from harness.report.progress import NO_PROGRESS, Progress
from harness.report.rowset import RowSet
from harness.report.stats import RESAMPLES
from harness.report.streams import HEADERS as STREAM_HEADERS
from harness.report.streams import LEGEND, stream_lines
from harness.report.streams import TITLE as STREAMS_TITLE
from harness.text import markdown_cell

Rows = RowSet | pd.DataFrame
Renderer = Callable[[PlainReport], str]
FORMATS: Registry[Renderer] = Registry("format (--format)")


def pivot_body(pivot: Pivot) -> list[list[Parts]]:
    """Each line's cells as parts: label, the tasks, the Average (without n), the error count."""
    body = []
    for line in pivot.lines:
        cells = [plain_parts(c, average=pivot.average and i == len(pivot.tasks)) for i, c in enumerate(line.cells)]
        body.append([(line.label,), *cells] + ([(str(line.errors),)] if pivot.errors else []))
    return body


def _joined(body: list[list[Parts]]) -> list[list[str]]:
    return [[" ".join(parts) for parts in line] for line in body]


def markdown(report: PlainReport) -> str:
    """Every header and cell escaped (harness.text.markdown_cell): method, task and teacher names may
    hold `|` or HTML, which tabulate's markdown passes on raw."""
    parts = [md.wrap(f"**{markdown_cell(m)}**") for m in report.unfinished]
    for pivot in report.pivots:
        body = [[markdown_cell(c) for c in line] for line in _joined(pivot_body(pivot))]
        parts.append(f"{pivot.title}\n\n" + md.table([markdown_cell(h) for h in pivot.headers], body, fixed=1))
    if report.streams:
        body = [[markdown_cell(c) for c in line] for line in stream_lines(list(report.streams))]
        parts.append(f"{STREAMS_TITLE}\n\n" + md.table(list(STREAM_HEADERS), body, fixed=2) + "\n\n" + md.wrap(LEGEND))
    return "\n\n".join(parts)


def latex(report: PlainReport) -> str:
    parts = [tex.PREAMBLE]
    for i, pivot in enumerate(report.pivots):
        parts.append(tex.table(pivot.title, pivot.headers, pivot_body(pivot), markers=report.unfinished if i == 0 else ()))
    if report.streams:
        body = [[(cell,) for cell in line] for line in stream_lines(list(report.streams))]
        parts.append(tex.table(STREAMS_TITLE, STREAM_HEADERS, body, notes=(LEGEND,), fixed=2))
    return "\n\n".join(parts)


def frame(report: PlainReport) -> pd.DataFrame:
    """The long form (plain.RECORD_COLUMNS), counts as integers and `finished` as a nullable flag."""
    out = pd.DataFrame.from_records(list(report.records), columns=RECORD_COLUMNS)
    out["missing"] = out["missing"].astype("Int64")
    out["finished"] = out["finished"].astype("boolean")
    out["streams"] = out["streams"].astype("Int64")
    return out


FORMATS.add("markdown", markdown)
FORMATS.add("latex", latex)
FORMATS.add("html", plain_page)  # the styled page (harness.report.page)
FORMATS.add("csv", lambda report: frame(report).to_csv(index=False, float_format="%.4f"))
FORMATS.add("json", lambda report: frame(report).to_json(orient="records", indent=2))


def render(rows: Rows, fmt: str, seed: int = 0, resamples: int = RESAMPLES, progress: Progress = NO_PROGRESS,
           notes: tuple[str, ...] = ()) -> str:
    """The plain report of `rows` in format `fmt`; `progress`: how far the runs read got."""
    renderer = FORMATS.get(fmt)
    return renderer(build_plain(rows, seed, resamples, progress, notes))


def render_table(rows: Rows, table: str, fmt: str, reference: bool = True, seed: int = 0,
                 resamples: int | None = None, read_notes: tuple[str, ...] = (),
                 progress: Progress = NO_PROGRESS) -> str:
    """One of the paper's layouts (`tables.TABLES`), filled from `rows`, in format `fmt`."""
    from harness.report.paper import build_report
    from harness.report.render_paper import PAPER_FORMATS
    from harness.report.tables import TABLES

    spec = TABLES.get(table)
    renderer = PAPER_FORMATS.get(fmt)
    return renderer(build_report(rows, spec, reference, seed, resamples or RESAMPLES, read_notes, progress))
