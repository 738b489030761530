"""The trust table (harness.report.trust) in every format: markdown, LaTeX, HTML (harness.report.page,
with the reliability diagrams where rows are at hand), CSV and JSON (the long form: one record per
line, task and metric, with McNemar's counts and p-value on the paired records)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd

from harness.registry import Registry
from harness.report import latex as tex
from harness.report import markdown as md
from harness.report.page import trust_page
from harness.report.trust import TrustReport
from harness.report.trust_text import shown_legend, tables
from harness.text import markdown_cell


def markdown(report: TrustReport) -> str:
    parts = []
    for title, headers, body, notes in tables(report):
        text = [f"{title}"]
        if body:
            escaped = [[markdown_cell(" ".join(p)) for p in line] for line in body]
            text.append(md.table([markdown_cell(h) for h in headers], escaped, fixed=1))
        text += [md.wrap(n) for n in notes]
        parts.append("\n\n".join(text))
    parts.append(md.wrap(shown_legend(report)))
    parts += [md.wrap(f"note: {n}") for n in report.notes]
    return "\n\n".join(parts)


def latex(report: TrustReport) -> str:
    parts = [tex.PREAMBLE]
    for title, headers, body, notes in tables(report):
        parts.append(tex.table(title, headers, body, notes=(*notes, shown_legend(report)) if body else notes))
    return "\n\n".join(parts)


def frame(report: TrustReport) -> pd.DataFrame:
    columns = ["run", "method", "model", "pretrained", "task", "metric", "value", "low", "high", "n",
               "in_distribution", "method_only", "baseline_only", "mcnemar_p"]
    out = pd.DataFrame.from_records(list(report.records), columns=columns)
    for column in ("n", "method_only", "baseline_only"):
        out[column] = out[column].astype("Int64")
    return out


TrustRenderer = Callable[[TrustReport], str]
TRUST_FORMATS: Registry[TrustRenderer] = Registry("format (--format)")
TRUST_FORMATS.add("markdown", markdown)
TRUST_FORMATS.add("latex", latex)
TRUST_FORMATS.add("html", trust_page)
TRUST_FORMATS.add("csv", lambda report: frame(report).to_csv(index=False, float_format="%.4f"))
TRUST_FORMATS.add("json", lambda report: json.dumps(json.loads(frame(report).to_json(orient="records")), indent=2))
