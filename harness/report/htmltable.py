"""One table of the HTML report as data (`Grid`) and its markup. The report objects (paper.PaperReport,
plain.PlainReport) are turned into grids by htmlcells.py; everything about how a table looks on the page
lives here: short headers with the full name on hover, a smaller second line for the interval, the
teacher once per table (or once per group of rows), and the best value of each column marked."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

from harness.report.tables import SHORT


@dataclass(frozen=True)
class Column:
    short: str
    """The header shown."""
    full: str
    """On hover: the task's whole name, or what a summary averages."""


@dataclass(frozen=True)
class Entry:
    """One cell as shown: `text` large, `sub` on a smaller second line, `tip` on hover."""

    text: str
    sub: str = ""
    tip: str = ""
    value: float | None = None
    """What the best-of-column mark compares; None leaves the cell out of it."""
    tone: str = ""
    """A CSS class: `up` / `down` (a difference whose interval excludes zero), `nodata`."""


@dataclass(frozen=True)
class Record:
    label: str
    entries: tuple[Entry, ...]
    group: str = ""
    """The teacher: shown once above its records (or in the caption when the table has one)."""
    kind: str = ""
    """A CSS class of the row: measured, paper, vs-paper, paired, cost."""
    ranked: bool = False
    """Whether the row competes for the best value of its columns (measured rows, not the paper's)."""
    tip: str = ""


@dataclass(frozen=True)
class Grid:
    anchor: str
    """The table's id on the page (links from the contents)."""
    caption: str
    columns: tuple[Column, ...]
    records: tuple[Record, ...]
    best: str | None = "max"
    """max, min, or None: which value of a column (within a teacher) is marked best."""
    notes: tuple[str, ...] = ()
    label_header: str = "Method"


def abbreviate(headers: Iterable[str]) -> list[str]:
    """Short headers: a corruption anywhere in a name's `/` parts becomes its short name (tables.SHORT,
    as in the text formats), a trailing `(...)` is left to the hover text. Where two headers would read alike, both keep their full name."""
    headers = list(headers)
    short = []
    for header in headers:
        parts = header.split("/")
        known = next((SHORT[p] for p in parts if p in SHORT), None)
        short.append(known or header.split(" (")[0])
    return [s if short.count(s) == 1 else h for s, h in zip(short, headers)]


def _breakable(text: str) -> str:
    """Escaped, with a line-break opportunity after each `-`, `/` and `_`, so a long task name wraps
    inside its header instead of widening the column."""
    out = html.escape(text)
    for mark in ("-", "/", "_"):
        out = out.replace(mark, f"{mark}<wbr>")
    return out


def _best(grid: Grid) -> set[tuple[int, int]]:
    """(record, column) of the best values: per teacher and column, among ranked records with a value,
    compared as displayed (one decimal) so that ties shown alike are marked alike; only where the
    values differ."""
    if grid.best is None:
        return set()
    pick = max if grid.best == "max" else min
    marked: set[tuple[int, int]] = set()
    for group in dict.fromkeys(r.group for r in grid.records):
        members = [i for i, r in enumerate(grid.records) if r.group == group and r.ranked]
        for col in range(len(grid.columns)):
            values = {i: round(grid.records[i].entries[col].value, 1) for i in members  # type: ignore[arg-type]
                      if grid.records[i].entries[col].value is not None}
            if len(set(values.values())) < 2:  # one contender, or all alike: nothing stands out
                continue
            top = pick(values.values())
            marked |= {(i, col) for i, v in values.items() if v == top}
    return marked


def _cell(entry: Entry, best: bool) -> str:
    classes = " ".join(c for c in ("num", entry.tone, "best" if best else "") if c)
    tip = entry.tip + ("; best in its column" if best and entry.tip else "best in its column" if best else "")
    title = f' title="{html.escape(tip)}"' if tip else ""
    sub = f'<span class="sub">{html.escape(entry.sub)}</span>' if entry.sub else ""
    return f'<td class="{classes}"{title}><span class="v">{html.escape(entry.text)}</span>{sub}</td>'


def render_grid(grid: Grid) -> str:
    """A <table> inside a horizontally scrolling box (a table wider than the window scrolls alone, the
    page never does). One teacher: named in the caption; several: a heading row above each one's rows."""
    groups = list(dict.fromkeys(r.group for r in grid.records))
    single = len(groups) == 1 and groups[0]
    caption = html.escape(grid.caption) + (
        f' <span class="teacher">teacher {html.escape(groups[0])}</span>' if single else "")
    heads = "".join(f'<th scope="col" title="{html.escape(c.full)}"><abbr>{_breakable(c.short)}</abbr></th>'
                    if c.short != c.full else f'<th scope="col">{_breakable(c.short)}</th>' for c in grid.columns)
    # the caption above the table, not a <caption>: that is never wider than its table, so a narrow
    # table's title would wrap into a column of words
    lines = [f'<h3 class="caption" id="{grid.anchor}-title">{caption}</h3>',
             f'<div class="scroll"><table id="{grid.anchor}" aria-labelledby="{grid.anchor}-title">',
             f'<thead><tr><th scope="col" class="label">{html.escape(grid.label_header)}</th>{heads}</tr></thead>',
             "<tbody>"]
    best = _best(grid)
    current = None
    for i, record in enumerate(grid.records):
        if not single and record.group != current:
            current = record.group
            lines.append(f'<tr class="group"><th colspan="{len(grid.columns) + 1}" scope="rowgroup">'
                         f"teacher {html.escape(record.group)}</th></tr>")
        tip = f' title="{html.escape(record.tip)}"' if record.tip else ""
        cells = "".join(_cell(e, (i, c) in best) for c, e in enumerate(record.entries))
        lines.append(f'<tr class="{record.kind}"><th scope="row" class="label"{tip}>{html.escape(record.label)}</th>'
                     f"{cells}</tr>")
    lines.append("</tbody></table></div>")
    if grid.notes:
        lines.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in grid.notes) + "</ul>")
    return "\n".join(lines)
