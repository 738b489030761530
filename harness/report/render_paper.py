"""A filled paper table (paper.PaperReport) as markdown, LaTeX (booktabs), CSV (long form, every
cell), HTML or JSON. Three sections, each with its notes under it: accuracy (ours and the paper's),
paired differences against zero-shot, cost. An unfinished run is said at the top of the body of
every format (CSV and JSON: per cell, in `finished`, `missing` and `status`). Cell text is ASCII
(harness.report.celltext) so that every format can carry it."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable

import pandas as pd

from harness.registry import Registry
from harness.report import latex as tex
from harness.report import markdown as md
from harness.report.celltext import Parts, cell_text, paper_parts
from harness.report.cost import CostLine
from harness.report.page import paper_page
from harness.report.latex import latex_escape
from harness.report.paper import Line, PaperReport, flatten
from harness.report.streams import HEADERS as STREAM_HEADERS
from harness.report.streams import LEGEND as STREAMS_LEGEND
from harness.report.streams import TITLE as STREAMS_TITLE
from harness.report.streams import stream_lines
from harness.report.tables import BASELINE, method_label
from harness.text import markdown_cell

__all__ = ["PAPER_FORMATS", "cell_text", "latex_escape", "sections"]  # cell_text, latex_escape: as before

PaperRenderer = Callable[[PaperReport], str]
PAPER_FORMATS: Registry[PaperRenderer] = Registry("format (--format)")

COST_HEADERS = ("Method", "Teacher", "n", "errors", "s/sample (median)", "TTT steps (median)",
                "FLOPs/sample (median)", "peak memory (max)")
COST_FIELDS = ("n", "errors", "seconds", "steps", "flops", "peak_memory")


def _body(lines: tuple[Line, ...]) -> list[list[Parts]]:
    return [[(line.label,), (line.teacher,), *(paper_parts(line.kind, c) for c in line.cells)] for line in lines]


def _cost_value(field: str, value: float | int | None) -> str:
    if value is None:
        return "not recorded" if field in ("flops", "peak_memory") else "-"
    if field == "seconds":
        return f"{value:.3f}"
    if field == "flops":
        return f"{value / 1e9:.2f} G"
    if field == "peak_memory":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:g}"


def _cost_body(cost: tuple[CostLine, ...]) -> list[list[Parts]]:
    return [[(c.label,), (c.teacher,), *((_cost_value(f, getattr(c, f)),) for f in COST_FIELDS)] for c in cost]


Section = tuple[str, tuple[str, ...], list[list[Parts]], tuple[str, ...]]


def sections(report: PaperReport, short: bool = False) -> list[Section]:
    """(title, headers, body, notes) for each section, in order; a section without rows has an empty
    body. Cells are parts (celltext: value, interval, n); `short`: the layout's short headers."""
    headers = ("Method", "Teacher", *(report.spec.short_headers if short else report.spec.headers))
    base = f"{method_label(BASELINE)} ({BASELINE})"
    return [
        (report.spec.title, headers, _body(report.lines), report.notes),
        (f"Paired difference vs {base} of the same teacher, on the same sample ids (points)",
         headers, _body(report.paired),
         report.paired_notes if report.paired else ("No method besides zero-shot to pair.",)),
        ("Cost per sample", COST_HEADERS, _cost_body(report.cost), report.cost_notes),
    ] + ([(STREAMS_TITLE, STREAM_HEADERS, [[(c,) for c in line] for line in stream_lines(list(report.streams))],
           (STREAMS_LEGEND,))] if report.streams else [])


def _lines(body: list[list[Parts]]) -> list[list[str]]:
    return [[" ".join(parts) for parts in line] for line in body]


def markdown(report: PaperReport) -> str:
    """Every title, header, cell and note escaped (harness.text.markdown_cell): labels, teachers and
    notes carry method, task and teacher names and paths, which tabulate's markdown passes on raw.
    Unfinished runs first, in bold; wide tables in parts under md.WIDTH characters, with the short
    headers' legend below; notes wrapped."""
    parts = [md.wrap(f"**{markdown_cell(m)}**") for m in report.unfinished]
    legend = report.spec.legend
    for i, (title, headers, body, notes) in enumerate(sections(report, short=True)):
        parts.append(f"{'###' if i == 0 else '####'} {markdown_cell(title)}")
        if body:
            parts.append(md.table([markdown_cell(h) for h in headers],
                                  [[markdown_cell(c) for c in line] for line in _lines(body)], fixed=2))
            if legend and i < 2:
                parts.append(md.wrap(markdown_cell(legend)))
        if notes:
            parts.append(md.bullets([markdown_cell(n) for n in notes]))
    return "\n\n".join(parts)


def latex(report: PaperReport) -> str:
    """Each section a table float (harness.report.latex): escaped, short headers with their legend,
    cells stacked, split into tabulars of at most latex.MAX_COLUMNS columns, scaled to fit."""
    parts = [tex.PREAMBLE]
    for i, (title, headers, body, notes) in enumerate(sections(report, short=True)):
        parts.append(tex.table(title, headers, body, notes, report.unfinished if i == 0 else (), fixed=2,
                               legend=report.spec.legend if i < 2 else ""))
    return "\n\n".join(parts)


def records(report: PaperReport) -> list[dict]:
    """Every cell of every section, one record each (cost cells use `column` for the quantity)."""
    out = flatten(report.lines + report.paired, report.spec)
    for c in report.cost:
        for field in COST_FIELDS:
            out.append({"table": report.spec.name, "kind": "cost", "label": c.label, "teacher": c.teacher,
                        "method": c.method, "model": c.model, "pretrained": c.pretrained, "run": ";".join(c.runs),
                        "column": field,
                        "header": COST_HEADERS[2 + COST_FIELDS.index(field)], "value": getattr(c, field)})
    return out


def csv_long(report: PaperReport) -> str:
    buffer = io.StringIO()
    frame = pd.DataFrame.from_records(records(report))
    for column in ("n", "errors", "unpaired", "missing"):  # counts stay integers; blank on cost records
        frame[column] = frame[column].astype("Int64")
    frame["finished"] = frame["finished"].astype("boolean")
    frame.to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue()


def _clean(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def json_doc(report: PaperReport) -> str:
    doc = {
        "table": report.spec.name, "title": report.spec.title,
        "columns": [{"key": k, "header": h, "short": s}
                    for k, h, s in zip(report.spec.keys, report.spec.headers, report.spec.short_headers)],
        "bootstrap": {"level": 0.95, "resamples": report.resamples, "seed": report.seed},
        "finished": not report.unfinished, "unfinished": list(report.unfinished),
        "cells": [{k: _clean(v) for k, v in r.items()} for r in records(report)],
        "notes": list(report.notes), "paired_notes": list(report.paired_notes), "cost_notes": list(report.cost_notes),
    }
    return json.dumps(doc, indent=2, allow_nan=False)


PAPER_FORMATS.add("markdown", markdown)
PAPER_FORMATS.add("latex", latex)
PAPER_FORMATS.add("csv", csv_long)
PAPER_FORMATS.add("html", paper_page)  # the styled page (harness.report.page)
PAPER_FORMATS.add("json", json_doc)
