"""A table cell as data, shared by the plain pivot (harness.report.plain) and the paper layouts
(harness.report.paper), so that every renderer (text, CSV, JSON, the HTML page) reads the same
numbers, intervals, counts and completeness, and none has to parse them back out of text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One table cell. `value` is a percentage (accuracy, recall), or a difference in points."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    """Scored samples (measured), or pairs (paired); 0 means no data, never zero accuracy."""
    errors: int = 0
    """Error rows left out of `n`."""
    unpaired: int = 0
    """Paired cells: sample ids seen by only one of the method and the baseline."""
    stated: float | None = None
    """Paper rows: the stated average, where it differs from the mean of the paper's own columns."""
    note: str = ""
    """Why a value is missing: `3/5 tasks`, `not finished`, `n/a` (the metric does not apply)."""
    runs: tuple[str, ...] = ()
    """The run ids whose rows the cell was computed from (sorted); () for the paper's numbers."""
    finished: bool | None = None
    """Every run of the cell has all of its task's samples; None where not known or not applicable."""
    missing: int | None = None
    """Samples still to come for the cell's task(s), where known."""
    status: str = ""
    """`not finished: 4 of 10 samples missing (run-b)`, for each unfinished run of the cell."""
