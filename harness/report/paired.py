"""Paired differences: each method against zero-shot of the same teacher (and run), on the same
sample ids. The query engine tallies the per-sample differences (-1, 0, +1: a sample measured twice is
averaged first); the bootstrap draws from that tally, so it costs the same for 50 samples or 50,000."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.rowset import RowSet, in_list
from harness.report.stats import Estimate, estimate_counts
from harness.report.tables import BASELINE, TableSpec, method_label, teacher_label

KEYS = ["run", "method", "model", "pretrained", "task"]

TALLY_SQL = """
WITH s AS MATERIALIZED (
    SELECT run, method, model, pretrained, task, sample_id, avg(coalesce(correct, false)::DOUBLE) AS c
    FROM rows WHERE error IS NULL AND task IN {tasks} GROUP BY ALL),
b AS (SELECT run, model, pretrained, task, sample_id, c FROM s WHERE method = ?),
m AS (SELECT * FROM s WHERE method <> ?)
SELECT 'pairs' AS kind, m.run, m.method, m.model, m.pretrained, m.task, m.c - b.c AS d, count(*) AS k
FROM m JOIN b USING (run, model, pretrained, task, sample_id) GROUP BY ALL
UNION ALL
SELECT 'samples', run, method, model, pretrained, task, NULL, count(*) FROM s GROUP BY ALL
"""
"""One pass: the per-sample outcomes (`s`) are built once and give both the tally of differences and
the scored sample ids per cell."""


def paired_tallies(rowset: RowSet, spec: TableSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(differences: one line per cell and difference value with its count, scored sample ids per cell)."""
    placeholders, tasks = in_list(spec.tasks)
    both = rowset.query(TALLY_SQL.format(tasks=placeholders), [*tasks, BASELINE, BASELINE])
    pairs = both[both["kind"] == "pairs"].drop(columns="kind")
    samples = both[both["kind"] == "samples"].drop(columns=["kind", "d"]).rename(columns={"k": "samples"})
    return pairs, samples


def cell_pairing(pairs: dict[tuple, pd.DataFrame], samples: dict[tuple, int], cell: tuple, key: str, seed: int,
                 resamples: int) -> tuple[Estimate, int, int]:
    """The paired estimate of one (run, method, model, pretrained, task) cell (`pairs`: its tally of
    differences, `samples`: scored sample ids per cell), and how many of its
    sample ids only the method, and only the baseline, have. A method without data in the cell is a
    missing cell, not unpairing."""
    ours = samples.get(cell, 0)
    if not ours:
        return Estimate(None, None, None, 0), 0, 0
    run, _, model, pretrained, task = cell
    base = samples.get((run, BASELINE, model, pretrained, task), 0)
    tally = pairs.get(cell)
    if tally is None:
        distinct, counts = np.empty(0), np.empty(0)
    else:
        ordered = tally.sort_values("d")
        distinct, counts = ordered["d"].to_numpy(dtype=np.float64), ordered["k"].to_numpy(dtype=np.int64)
    paired = int(counts.sum())
    return estimate_counts(distinct, counts, key, seed, resamples), ours - paired, base - paired


def unpaired_note(method: str, model: str, pretrained: str, task: str, only_method: int, only_base: int) -> str:
    return (f"{method_label(method)} {teacher_label(model, pretrained)} {task}: {only_method} only in {method}, "
            f"{only_base} only in {BASELINE}")
