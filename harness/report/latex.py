"""LaTeX tables (booktabs) that compile whatever the names hold and fit the page.

Every text that reaches LaTeX is escaped here: captions, headers, cells and notes (a raw `%` in
`Top-1 accuracy (%)` would comment out the rest of its line). A cell's parts (value, interval, n) are
stacked in one cell instead of written on one line, a table of more than MAX_COLUMNS value columns is
split into tabulars of consecutive columns, each repeating the label columns, and each tabular is
scaled down to the line width if it is still wider (never up): Table 2's 19 columns become two
tabulars of 8 corruptions at print size. Needs `\\usepackage{booktabs,graphicx}` (said in a comment
at the top of the output)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PREAMBLE = r"% apm-bench report: needs \usepackage{booktabs,graphicx}"
MAX_COLUMNS = 10
"""Value columns per tabular: 10 stacked cells fit a page's text width at \\scriptsize."""
FIT = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
"""graphicx: the box's natural width inside the size argument, so only a too wide tabular shrinks."""

SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "|": r"\textbar{}", "[": "{[}", "]": "{]}", "\n": " ", "\r": " "}
"""Brackets are braced so that a cell starting with `[` is not read as the optional argument of the
`\\\\` before it; line breaks become spaces (an empty line inside a tabular is an error)."""


def latex_escape(text: str) -> str:
    return "".join(SPECIALS.get(ch, ch) for ch in text)


def stack(parts: Sequence[str]) -> str:
    """One cell from its parts: the value, then the interval and n below it in smaller type."""
    escaped = [latex_escape(p) for p in parts]
    if len(escaped) < 2:
        return escaped[0] if escaped else ""
    return r"\shortstack[r]{" + r"\\".join([escaped[0], *(r"{\tiny " + p + "}" for p in escaped[1:])]) + "}"


def column_groups(count: int, fixed: int, limit: int = MAX_COLUMNS) -> list[list[int]]:
    """The value columns after the first `fixed`, in as few groups of at most `limit` as possible,
    of sizes as equal as possible (17 columns: 9 and 8, not 10 and 7)."""
    values = list(range(fixed, count))
    if not values:
        return [[]]
    k = math.ceil(len(values) / limit)
    size, extra = divmod(len(values), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        out.append(values[start:end])
        start = end
    return out


def tabular(headers: Sequence[str], body: Sequence[Sequence[str]], fixed: int) -> str:
    """A booktabs tabular of already escaped headers and cells, wrapped to fit the line width."""
    spec = "l" * fixed + "r" * (len(headers) - fixed)
    lines = [FIT, rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [" & ".join(line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    return "\n".join(lines)


def table(caption: str, headers: Sequence[str], body: Sequence[Sequence[Sequence[str]]], notes: Sequence[str] = (),
          markers: Sequence[str] = (), fixed: int = 1, legend: str = "") -> str:
    """A table float: caption, the unfinished `markers` in bold above the tables, the tabulars
    (split by `column_groups`), `legend` and `notes` below. `body` cells are parts (celltext); all
    text is plain and escaped here."""
    lines = [r"\begin{table}[ht]", r"\centering", r"\scriptsize", rf"\caption{{{latex_escape(caption)}}}"]
    lines += [rf"\par\textbf{{{latex_escape(m)}}}\par\smallskip" for m in markers]
    if body:
        heads = [latex_escape(h) for h in headers]
        cells = [[stack(parts) for parts in line] for line in body]
        for i, group in enumerate(column_groups(len(headers), fixed)):
            keep = list(range(fixed)) + group
            if i:
                lines.append(r"\par\medskip")
            lines.append(tabular([heads[j] for j in keep], [[line[j] for j in keep] for line in cells], fixed))
    if legend:
        lines.append(rf"\par\smallskip\footnotesize {latex_escape(legend)}")
    lines += [rf"\par\smallskip\footnotesize {latex_escape(n)}" for n in notes]
    lines.append(r"\end{table}")
    return "\n".join(lines)
