"""Cost beside accuracy: what one sample costs each method, from the same rows as its accuracy.
FLOPs and peak memory may be null (peak memory is recorded on GPU only) or absent (older runs); a
report says they were not recorded rather than printing zeros."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.report.rowset import RowSet, in_list
from harness.report.tables import method_label, teacher_label

COST_SQL = """
SELECT run, method, model, pretrained,
       count(*) FILTER (WHERE error IS NULL) AS n,
       count(*) FILTER (WHERE error IS NOT NULL) AS errors,
       median(seconds) FILTER (WHERE error IS NULL) AS seconds,
       median(ttt_steps) FILTER (WHERE error IS NULL) AS steps,
       median(flops) FILTER (WHERE error IS NULL) AS flops,
       max(peak_memory_bytes) FILTER (WHERE error IS NULL) AS peak_memory,
       list_sort(list(DISTINCT run_id)) AS runs
FROM rows WHERE task IN {tasks} GROUP BY ALL
"""


@dataclass(frozen=True)
class CostLine:
    label: str
    teacher: str
    method: str
    model: str
    pretrained: str
    n: int
    """Scored rows the figures below come from."""
    errors: int
    seconds: float | None
    """Median wall seconds per sample (teacher forward included, as the rows record it)."""
    steps: float | None
    """Median TTT steps per sample (0 for methods that do not adapt)."""
    flops: float | None
    """Median FLOPs per sample; None when not recorded."""
    peak_memory: float | None
    """Largest per-sample peak memory in bytes; None when not recorded."""
    runs: tuple[str, ...] = ()
    """The run ids of the rows the figures come from."""


def _value(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def cost_lines(rowset: RowSet, groups: list[tuple[str, str, str, str]], tasks: tuple[str, ...]) -> list[CostLine]:
    """One line per (method, model, pretrained, run) in `groups`, over the rows of `tasks`."""
    placeholders, params = in_list(tasks)
    found = {(r.method, r.model, r.pretrained, r.run): r
             for r in rowset.query(COST_SQL.format(tasks=placeholders), params).itertuples()}
    out = []
    for method, model, pretrained, run in groups:
        r = found.get((method, model, pretrained, run))
        out.append(CostLine(
            label=method_label(method) + (f" [{run}]" if run else ""), teacher=teacher_label(model, pretrained),
            method=method, model=model, pretrained=pretrained, n=int(r.n) if r else 0,
            errors=int(r.errors) if r else 0, seconds=_value(r.seconds) if r else None,
            steps=_value(r.steps) if r else None, flops=_value(r.flops) if r else None,
            peak_memory=_value(r.peak_memory) if r else None, runs=tuple(sorted(r.runs)) if r else (),
        ))
    return out


def cost_notes(rowset: RowSet, tasks: tuple[str, ...]) -> list[str]:
    placeholders, params = in_list(tasks)
    recorded = rowset.query(f"SELECT count(flops) AS flops, count(peak_memory_bytes) AS memory FROM rows "
                            f"WHERE task IN {placeholders}", params).iloc[0]
    missing = [what for what, column in (("FLOPs", "flops"), ("peak memory", "memory")) if not recorded[column]]
    notes = ["Over this table's tasks: median seconds per sample and median TTT steps of the scored rows."]
    if missing:
        notes.append(f"{' and '.join(missing)} not recorded in these rows.")
    return notes
