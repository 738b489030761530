"""A filled paper table (paper.PaperReport) as markdown, LaTeX (booktabs), CSV (long form, every
cell), HTML or JSON. Three sections, each with its notes under it: accuracy (ours and the paper's),
paired differences against zero-shot, cost. Cell text is ASCII so that every format can carry it."""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable

import pandas as pd
from tabulate import tabulate

from harness.registry import Registry
from harness.report.cost import CostLine
from harness.report.htmldoc import html_document
from harness.report.paper import Cell, Line, PaperReport, flatten
from harness.report.tables import BASELINE, method_label
from harness.text import markdown_cell

PaperRenderer = Callable[[PaperReport], str]
PAPER_FORMATS: Registry[PaperRenderer] = Registry("format (--format)")

COST_HEADERS = ("Method", "Teacher", "n", "errors", "s/sample (median)", "TTT steps (median)",
                "FLOPs/sample (median)", "peak memory (max)")
COST_FIELDS = ("n", "errors", "seconds", "steps", "flops", "peak_memory")


def _interval(cell: Cell, signed: bool) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    if cell.low is None or cell.high is None:
        return ""
    return f" [{fmt.format(cell.low)}, {fmt.format(cell.high)}]"


def cell_text(kind: str, cell: Cell) -> str:
    """How a cell reads: measured `68.1 [66.0, 70.2] (n=500)`, paper `68.1` (or `49.7 (stated 50.3)`),
    difference `+1.2`, paired `+1.2 [-0.4, +2.8] (n=500, 3 unpaired)`; no data is `- (n=0)`."""
    if kind == "paper":
        return f"{cell.value:.1f}" + (f" (stated {cell.stated:.1f})" if cell.stated is not None else "")
    if kind == "vs-paper":
        return "-" if cell.value is None else f"{cell.value:+.1f}"
    extra = f", {cell.unpaired} unpaired" if cell.unpaired else ""
    if cell.value is None:
        return f"- ({cell.note})" if cell.note else f"- (n=0{extra})"
    signed = kind == "paired"
    value = f"{cell.value:+.1f}" if signed else f"{cell.value:.1f}"
    return f"{value}{_interval(cell, signed)} (n={cell.n}{extra})"


def _body(lines: tuple[Line, ...]) -> list[list[str]]:
    return [[line.label, line.teacher, *(cell_text(line.kind, c) for c in line.cells)] for line in lines]


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


def _cost_body(cost: tuple[CostLine, ...]) -> list[list[str]]:
    return [[c.label, c.teacher, *(_cost_value(f, getattr(c, f)) for f in COST_FIELDS)] for c in cost]


def sections(report: PaperReport) -> list[tuple[str, tuple[str, ...], list[list[str]], tuple[str, ...]]]:
    """(title, headers, body, notes) for each section, in order; a section without rows has an empty body."""
    headers = ("Method", "Teacher", *report.spec.headers)
    base = f"{method_label(BASELINE)} ({BASELINE})"
    return [
        (report.spec.title, headers, _body(report.lines), report.notes),
        (f"Paired difference vs {base} of the same teacher, on the same sample ids (points)",
         headers, _body(report.paired),
         report.paired_notes if report.paired else ("No method besides zero-shot to pair.",)),
        ("Cost per sample", COST_HEADERS, _cost_body(report.cost), report.cost_notes),
    ]


def markdown(report: PaperReport) -> str:
    """Every title, header, cell and note escaped (harness.text.markdown_cell): labels, teachers and
    notes carry method, task and teacher names and paths, which tabulate's markdown passes on raw."""
    parts = []
    for level, (title, headers, body, notes) in zip(("###", "####", "####"), sections(report)):
        parts.append(f"{level} {markdown_cell(title)}")
        if body:
            parts.append(tabulate([[markdown_cell(c) for c in line] for line in body],
                                  headers=[markdown_cell(h) for h in headers], tablefmt="github",
                                  disable_numparse=True))
        if notes:
            parts.append("\n".join(f"- {markdown_cell(n)}" for n in notes))
    return "\n\n".join(parts)


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def latex(report: PaperReport) -> str:
    parts = []
    for title, headers, body, notes in sections(report):
        lines = [r"\begin{table}[ht]", r"\centering", r"\scriptsize", rf"\caption{{{latex_escape(title)}}}"]
        if body:
            lines.append(tabulate(body, headers=headers, tablefmt="latex_booktabs", disable_numparse=True))
        lines += [rf"\par\smallskip\footnotesize {latex_escape(n)}" for n in notes]
        lines.append(r"\end{table}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def html_page(report: PaperReport) -> str:
    """A complete HTML document titled after the table: one <h2> section per part, notes as lists."""
    parts = []
    for title, headers, body, notes in sections(report):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if body:
            parts.append(tabulate(body, headers=headers, tablefmt="html", disable_numparse=True))
        if notes:
            parts.append("<ul>\n" + "\n".join(f"<li>{html.escape(n)}</li>" for n in notes) + "\n</ul>")
    section = "<section class=\"apm-bench-report\">\n" + "\n".join(parts) + "\n</section>"
    return html_document(report.spec.title, section)


def records(report: PaperReport) -> list[dict]:
    """Every cell of every section, one record each (cost cells use `column` for the quantity)."""
    out = flatten(report.lines + report.paired, report.spec)
    for c in report.cost:
        for field in COST_FIELDS:
            out.append({"table": report.spec.name, "kind": "cost", "label": c.label, "teacher": c.teacher,
                        "method": c.method, "model": c.model, "pretrained": c.pretrained, "column": field,
                        "header": COST_HEADERS[2 + COST_FIELDS.index(field)], "value": getattr(c, field)})
    return out


def csv_long(report: PaperReport) -> str:
    buffer = io.StringIO()
    frame = pd.DataFrame.from_records(records(report))
    for column in ("n", "errors", "unpaired"):  # counts stay integers; blank on cost records
        frame[column] = frame[column].astype("Int64")
    frame.to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue()


def _clean(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def json_doc(report: PaperReport) -> str:
    doc = {
        "table": report.spec.name, "title": report.spec.title,
        "columns": [{"key": k, "header": h} for k, h in zip(report.spec.keys, report.spec.headers)],
        "bootstrap": {"level": 0.95, "resamples": report.resamples, "seed": report.seed},
        "cells": [{k: _clean(v) for k, v in r.items()} for r in records(report)],
        "notes": list(report.notes), "paired_notes": list(report.paired_notes), "cost_notes": list(report.cost_notes),
    }
    return json.dumps(doc, indent=2, allow_nan=False)


PAPER_FORMATS.add("markdown", markdown)
PAPER_FORMATS.add("latex", latex)
PAPER_FORMATS.add("csv", csv_long)
PAPER_FORMATS.add("html", html_page)
PAPER_FORMATS.add("json", json_doc)
