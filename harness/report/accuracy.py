"""Top-1, top-5 and mean per-class recall per (run, method, teacher) x task, with n, from the rows of
one or more runs: the counts every table is computed from (harness.report.plain builds the plain
pivots from them, harness.report.paper the paper layouts). The three are CLIP_benchmark's
classification metrics."""

from __future__ import annotations

import pandas as pd

from harness.report.digest import digest_sql
from harness.report.rowset import Orders, RowSet, as_rowset

GROUP = ["run", "method", "model", "pretrained"]
"""One line of a table; `run` is "" when runs are pooled (harness.report.inputs)."""
KEYS = [*GROUP, "task"]
COLUMNS = [*KEYS, "n", "correct", "accuracy", "top5_n", "top5_correct", "top5_accuracy", "mean_per_class_recall",
           "errors"]
CELL_COLUMNS = [*COLUMNS, "ids", "runs"]

METRICS: dict[str, str] = {
    "accuracy": "Top-1 accuracy (%)",
    "top5_accuracy": "Top-5 accuracy (%), tasks with at least 5 classes",
    "mean_per_class_recall": "Mean per-class recall (%), i.e. balanced accuracy",
}
"""Column of `cells` -> the title of its table."""
COUNTS = {"accuracy": ("n", "correct"), "top5_accuracy": ("top5_n", "top5_correct")}
"""Metrics that are means of 0/1 outcomes: (trials, hits) columns, from which intervals are drawn."""


SCORED = """scored AS (SELECT run, run_id, method, model, pretrained, task, sample_id, label, error IS NULL AS ok,
                          coalesce(correct, false) AS hit, top5_correct FROM rows)"""
COUNT_COLUMNS = f"""count(*) FILTER (WHERE ok) AS n,
       count(*) FILTER (WHERE ok AND hit) AS correct,
       count(*) FILTER (WHERE ok AND top5_correct IS NOT NULL) AS top5_n,
       count(*) FILTER (WHERE ok AND top5_correct) AS top5_correct,
       count(*) FILTER (WHERE NOT ok) AS errors,
       {digest_sql("ok")} AS ids,
       list_sort(list(DISTINCT run_id)) AS runs"""
"""Per cell: the counts, the digest of its scored sample ids (what seeds its intervals) and the run
ids its rows carry (what CSV and JSON name as its runs)."""
COUNTS_SQL = f"""
WITH {SCORED}
SELECT run, method, model, pretrained, task, {COUNT_COLUMNS}, NULL::DOUBLE AS mean_per_class_recall
FROM scored GROUP BY run, method, model, pretrained, task
"""
"""The counts alone (a paper table needs no per-class recall, which costs a second grouping by class)."""
CELLS_SQL = f"""
WITH {SCORED},
counts AS (SELECT run, method, model, pretrained, task, {COUNT_COLUMNS}
           FROM scored GROUP BY run, method, model, pretrained, task),
recall AS (
    SELECT run, method, model, pretrained, task, 100 * avg(class_recall) AS mean_per_class_recall
    FROM (SELECT run, method, model, pretrained, task, label, avg(hit::DOUBLE) AS class_recall
          FROM scored WHERE ok GROUP BY ALL)
    GROUP BY ALL)
SELECT * FROM counts LEFT JOIN recall USING (run, method, model, pretrained, task)
"""


def cells(rows: RowSet | pd.DataFrame, recall: bool = True) -> pd.DataFrame:
    """Long form, one line per (run, method, model, pretrained, task): n scored, correct, the three
    metrics, errors, the digest of the scored sample ids (`ids`) and the run ids of its rows
    (`runs`, a sorted tuple). Error rows are counted apart, never scored as wrong or right. Top-5
    counts only rows that carry it (the worker leaves it empty where a task has fewer than 5
    classes). Mean per-class recall averages the recall of every class that has a scored sample
    (sklearn's balanced_accuracy_score; left out with `recall=False`). Lines come in the rows' order
    (runs, teachers, the paper's method order)."""
    rowset = as_rowset(rows)
    out = rowset.query(CELLS_SQL if recall else COUNTS_SQL)
    if out.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    orders = rowset.orders
    key = out.apply(lambda r: (orders.rank("teachers", (r.model, r.pretrained)), method_rank(orders, r.method),
                               orders.rank("runs", r.run), orders.rank("tasks", r.task)), axis=1)
    out = out.iloc[sorted(range(len(out)), key=lambda i: key.iloc[i])].reset_index(drop=True)
    for column in ("n", "correct", "top5_n", "top5_correct", "errors"):
        out[column] = out[column].astype("int64")
    out["ids"] = [int(i) for i in out["ids"]]
    out["runs"] = [tuple(sorted(str(r) for r in runs)) for runs in out["runs"]]
    out["accuracy"] = 100.0 * out["correct"] / out["n"].where(out["n"] > 0)
    out["top5_accuracy"] = 100.0 * out["top5_correct"] / out["top5_n"].where(out["top5_n"] > 0)
    return out[CELL_COLUMNS]


def method_rank(orders: Orders, method: str) -> tuple:
    """The paper's method order first (zeroshot, ensemble, tpt, apm), then the rows' own order."""
    from harness.report.tables import METHOD_ORDER

    return (METHOD_ORDER.index(method), 0, "") if method in METHOD_ORDER else (len(METHOD_ORDER), *orders.rank("methods", method))
