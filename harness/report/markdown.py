"""Markdown that stays readable in a terminal, an editor and a diff: tables and lines of at most about
WIDTH characters. A table wider than that (Table 2's 15 corruptions, Fashion-MNIST-C's 17 columns, a
plain pivot of many tasks) is split into parts of consecutive columns, each repeating the label
columns, rather than cutting a cell's interval or n; notes and legends are wrapped. Only a single
column (with the labels) wider than WIDTH, or a word (a path) longer than it, can exceed it.

Everything given here is already escaped (harness.text.markdown_cell): widths are those of the text
as written."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from tabulate import tabulate

WIDTH = 160


def _widths(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[int]:
    """Each column's width as tabulate's github format pads it (at least 3, for the `---` rule)."""
    return [max([3, len(h), *(len(line[i]) for line in body)]) for i, h in enumerate(headers)]


def parts(headers: Sequence[str], body: Sequence[Sequence[str]], fixed: int, limit: int = WIDTH) -> list[list[int]]:
    """The value columns (after the first `fixed`) in as few consecutive groups as fit in `limit`
    characters beside the fixed columns, of column counts as even as fits (16 columns in parts of
    3, 3, 3, 3, 2, 2 rather than 3, 3, 3, 3, 3, 1); at least one column per group."""
    widths = _widths(headers, body)
    base = 1 + sum(w + 3 for w in widths[:fixed])  # `| a | b |`: each column adds its width and 3

    def fits(group: list[int]) -> bool:
        return len(group) == 1 or base + sum(widths[i] + 3 for i in group) <= limit

    greedy: list[list[int]] = [[]]
    for i in range(fixed, len(headers)):
        if greedy[-1] and not fits(greedy[-1] + [i]):
            greedy.append([])
        greedy[-1].append(i)
    values = list(range(fixed, len(headers)))
    size, extra = divmod(len(values), len(greedy))
    even, start = [], 0
    for k in range(len(greedy)):
        even.append(values[start:start + size + (k < extra)])
        start += size + (k < extra)
    return even if all(fits(g) for g in even) else greedy


def table(headers: Sequence[str], body: Sequence[Sequence[str]], fixed: int = 1, limit: int = WIDTH) -> str:
    """One github table, or its parts (`Columns 1-4 of 16:` above each) when it would be wider than
    `limit`."""
    groups = parts(headers, body, fixed, limit)
    out = []
    total = len(headers) - fixed
    for group in groups:
        keep = list(range(fixed)) + group
        text = tabulate([[line[i] for i in keep] for line in body], headers=[headers[i] for i in keep],
                        tablefmt="github", disable_numparse=True)
        if len(groups) > 1:
            first, last = group[0] - fixed + 1, group[-1] - fixed + 1
            span = f"Columns {first}-{last}" if last > first else f"Column {first}"
            text = f"{span} of {total}:\n\n{text}"
        out.append(text)
    return "\n\n".join(out)


def wrap(text: str, first: str = "", rest: str = "", limit: int = WIDTH) -> str:
    """`text` in lines of at most `limit` characters, broken at spaces only (a long path stays whole)."""
    return textwrap.fill(text, width=limit, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                         break_on_hyphens=False)


def bullets(lines: Sequence[str], limit: int = WIDTH) -> str:
    """A markdown list, one item per line given, each wrapped with its continuation indented."""
    return "\n".join(wrap(line, "- ", "  ", limit) for line in lines)
