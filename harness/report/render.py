"""Tables to text: tabulate for markdown and LaTeX (booktabs), pandas for CSV (long form, every cell)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from tabulate import tabulate

from harness.registry import Registry
from harness.report.accuracy import cells, pivot

Renderer = Callable[[pd.DataFrame], str]
FORMATS: Registry[Renderer] = Registry("format (--format)")


def _tabulated(fmt: str) -> Renderer:
    def render(rows: pd.DataFrame) -> str:
        headers, body = pivot(cells(rows))
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    return render


FORMATS.add("markdown", _tabulated("github"))
FORMATS.add("latex", _tabulated("latex_booktabs"))
FORMATS.add("csv", lambda rows: cells(rows).to_csv(index=False, float_format="%.4f"))


def render(rows: pd.DataFrame, fmt: str) -> str:
    return FORMATS.get(fmt)(rows)
