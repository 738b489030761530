"""Tables to text. Without a paper layout: the generic pivots (method x task, with n; top-1, top-5 and
mean per-class recall), via
tabulate for markdown, LaTeX (booktabs) and HTML, pandas for CSV (long form, every cell) and JSON.
With a layout (`--table`), render_paper.py does the paper's tables; `render_table` is its entry."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from tabulate import tabulate

from harness.registry import Registry
from harness.report.accuracy import METRICS, cells, pivot
from harness.report.htmldoc import html_document
from harness.report.rowset import RowSet
from harness.report.stats import RESAMPLES
from harness.text import markdown_cell

Rows = RowSet | pd.DataFrame
Renderer = Callable[[Rows, int, int], str]
"""(rows, bootstrap seed, resamples) -> text."""
FORMATS: Registry[Renderer] = Registry("format (--format)")


def _tabulated(fmt: str, cell: Callable[[str], str] = str) -> Renderer:
    """One titled table per metric (top-1 first), each a method x task pivot; `cell` escapes each
    header and cell for the format where tabulate does not (markdown: names may hold `|` or HTML)."""

    def render(rows: Rows, seed: int = 0, resamples: int = RESAMPLES) -> str:
        long = cells(rows)
        parts = []
        for metric, title in METRICS.items():
            headers, body = pivot(long, metric, seed, resamples)
            headers, body = [cell(h) for h in headers], [[cell(c) for c in line] for line in body]
            parts.append(f"{title}\n\n" + tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True))
        return "\n\n".join(parts)

    return render


def _html(rows: Rows, seed: int = 0, resamples: int = RESAMPLES) -> str:
    return html_document("apm-bench report: method x task", _tabulated("html")(rows, seed, resamples))


FORMATS.add("markdown", _tabulated("github", markdown_cell))  # tabulate escapes LaTeX and HTML itself
FORMATS.add("latex", _tabulated("latex_booktabs"))
FORMATS.add("html", _html)
FORMATS.add("csv", lambda rows, seed=0, resamples=RESAMPLES: cells(rows).to_csv(index=False, float_format="%.4f"))
FORMATS.add("json", lambda rows, seed=0, resamples=RESAMPLES: cells(rows).to_json(orient="records", indent=2))


def render(rows: Rows, fmt: str, seed: int = 0, resamples: int = RESAMPLES) -> str:
    return FORMATS.get(fmt)(rows, seed, resamples)


def render_table(rows: Rows, table: str, fmt: str, reference: bool = True, seed: int = 0,
                 resamples: int | None = None, read_notes: tuple[str, ...] = ()) -> str:
    """One of the paper's layouts (`tables.TABLES`), filled from `rows`, in format `fmt`."""
    from harness.report.paper import build_report
    from harness.report.render_paper import PAPER_FORMATS
    from harness.report.tables import TABLES

    spec = TABLES.get(table)
    renderer = PAPER_FORMATS.get(fmt)
    return renderer(build_report(rows, spec, reference, seed, resamples or RESAMPLES, read_notes))
