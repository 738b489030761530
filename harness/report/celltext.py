"""How a cell reads, as parts: the value, its interval, its count (`68.1`, `[66.0, 70.2]`, `(n=500)`).
Markdown and HTML join the parts on one line; LaTeX stacks them, so a wide table stays narrow. Cell
text is ASCII so that every format can carry it."""

from __future__ import annotations

from harness.report.values import Cell

Parts = tuple[str, ...]


def _interval(cell: Cell, signed: bool) -> Parts:
    if cell.low is None or cell.high is None:
        return ()
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return (f"[{fmt.format(cell.low)}, {fmt.format(cell.high)}]",)


def paper_parts(kind: str, cell: Cell) -> Parts:
    """Measured `68.1 [66.0, 70.2] (n=500)`, paper `68.1` (or `49.7 (stated 50.3)`), difference
    `+1.2`, paired `+1.2 [-0.4, +2.8] (n=500, 3 unpaired)`; no data is `- (n=0)`, a blank average
    `- (not finished)` or `- (3/5 tasks)`."""
    if kind == "paper":
        return (f"{cell.value:.1f}",) + ((f"(stated {cell.stated:.1f})",) if cell.stated is not None else ())
    if kind == "vs-paper":
        return ("-",) if cell.value is None else (f"{cell.value:+.1f}",)
    extra = f", {cell.unpaired} unpaired" if cell.unpaired else ""
    if cell.value is None:
        return ("-", f"({cell.note})" if cell.note else f"(n=0{extra})")
    signed = kind == "paired"
    value = f"{cell.value:+.1f}" if signed else f"{cell.value:.1f}"
    return (value, *_interval(cell, signed), f"(n={cell.n}{extra})")


def cell_text(kind: str, cell: Cell) -> str:
    return " ".join(paper_parts(kind, cell))


def plain_parts(cell: Cell, average: bool = False) -> Parts:
    """The plain pivot's cells: `75.0 [25.0, 100.0] (n=4)`, `- (n=0)`, `n/a` where the metric does not
    apply; an Average without n (`87.5 [62.5, 100.0]`), or `- (1/2 tasks)`, `- (not finished)`."""
    if cell.value is None:
        if cell.note == "n/a":
            return ("n/a",)
        return ("-", f"({cell.note})" if cell.note else "(n=0)")
    return (f"{cell.value:.1f}", *_interval(cell, False)) + (() if average else (f"(n={cell.n})",))
