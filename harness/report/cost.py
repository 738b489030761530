"""Cost beside accuracy: what one sample costs each method, from the same rows as its accuracy.
FLOPs and peak memory may be null (peak memory is recorded on GPU only) or absent (older runs); a
report says they were not recorded rather than printing zeros."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.report.tables import method_label, teacher_label

FLOPS_COLUMNS = ("flops",)
MEMORY_COLUMNS = ("peak_memory_bytes",)
"""The store's column names (harness.store.Row); memory is in bytes."""


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


def _column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in frame.columns and frame[c].notna().any()), None)


def _median(series: pd.Series) -> float | None:
    series = series.dropna()
    return float(series.median()) if len(series) else None


def cost_lines(rows: pd.DataFrame, groups: list[tuple[str, str, str, str]]) -> list[CostLine]:
    """One line per (method, model, pretrained, run) in `groups`, over the scored rows of `rows`."""
    flops_col, memory_col = _column(rows, FLOPS_COLUMNS), _column(rows, MEMORY_COLUMNS)
    out = []
    parts = dict(iter(rows.groupby(["method", "model", "pretrained", "run"], sort=False)))
    for method, model, pretrained, run in groups:
        frame = parts.get((method, model, pretrained, run), rows.iloc[:0])
        scored = frame[frame["error"].isna()]
        memory = scored[memory_col].dropna() if memory_col else pd.Series(dtype=float)
        out.append(CostLine(
            label=method_label(method) + (f" [{run}]" if run else ""), teacher=teacher_label(model, pretrained),
            method=method, model=model,
            pretrained=pretrained, n=len(scored), errors=len(frame) - len(scored),
            seconds=_median(scored["seconds"]), steps=_median(scored["ttt_steps"]),
            flops=_median(scored[flops_col]) if flops_col else None,
            peak_memory=float(memory.max()) if len(memory) else None,
        ))
    return out


def cost_notes(rows: pd.DataFrame) -> list[str]:
    missing = [what for what, names in (("FLOPs", FLOPS_COLUMNS), ("peak memory", MEMORY_COLUMNS))
               if _column(rows, names) is None]
    notes = ["Over this table's tasks: median seconds per sample and median TTT steps of the scored rows."]
    if missing:
        notes.append(f"{' and '.join(missing)} not recorded in these rows.")
    return notes
