"""Top-1, top-5 and mean per-class recall per (run, method, teacher) x task, with n, intervals and an
average over the tasks, from the rows of one or more runs. The three are CLIP_benchmark's
classification metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.rowset import Orders, RowSet, as_rowset
from harness.report.stats import RESAMPLES, Estimate, estimate_counts, mean_of

GROUP = ["run", "method", "model", "pretrained"]
"""One line of a table; `run` is "" when runs are pooled (harness.report.inputs)."""
KEYS = [*GROUP, "task"]
COLUMNS = [*KEYS, "n", "correct", "accuracy", "top5_n", "top5_correct", "top5_accuracy", "mean_per_class_recall",
           "errors"]

METRICS: dict[str, str] = {
    "accuracy": "Top-1 accuracy (%)",
    "top5_accuracy": "Top-5 accuracy (%), tasks with at least 5 classes",
    "mean_per_class_recall": "Mean per-class recall (%), i.e. balanced accuracy",
}
"""Column of `cells` -> the title of its table."""
COUNTS = {"accuracy": ("n", "correct"), "top5_accuracy": ("top5_n", "top5_correct")}
"""Metrics that are means of 0/1 outcomes: (trials, hits) columns, from which intervals are drawn."""


COUNTS_SQL = """
WITH scored AS (SELECT run, method, model, pretrained, task, label, error IS NULL AS ok,
                       coalesce(correct, false) AS hit, top5_correct FROM rows)
SELECT run, method, model, pretrained, task,
       count(*) FILTER (WHERE ok) AS n,
       count(*) FILTER (WHERE ok AND hit) AS correct,
       count(*) FILTER (WHERE ok AND top5_correct IS NOT NULL) AS top5_n,
       count(*) FILTER (WHERE ok AND top5_correct) AS top5_correct,
       count(*) FILTER (WHERE NOT ok) AS errors,
       NULL::DOUBLE AS mean_per_class_recall
FROM scored GROUP BY ALL
"""
"""The counts alone (a paper table needs no per-class recall, which costs a second grouping by class)."""
CELLS_SQL = """
WITH scored AS (SELECT run, method, model, pretrained, task, label, error IS NULL AS ok,
                       coalesce(correct, false) AS hit, top5_correct FROM rows),
counts AS (
    SELECT run, method, model, pretrained, task,
           count(*) FILTER (WHERE ok) AS n,
           count(*) FILTER (WHERE ok AND hit) AS correct,
           count(*) FILTER (WHERE ok AND top5_correct IS NOT NULL) AS top5_n,
           count(*) FILTER (WHERE ok AND top5_correct) AS top5_correct,
           count(*) FILTER (WHERE NOT ok) AS errors
    FROM scored GROUP BY ALL),
recall AS (
    SELECT run, method, model, pretrained, task, 100 * avg(class_recall) AS mean_per_class_recall
    FROM (SELECT run, method, model, pretrained, task, label, avg(hit::DOUBLE) AS class_recall
          FROM scored WHERE ok GROUP BY ALL)
    GROUP BY ALL)
SELECT * FROM counts LEFT JOIN recall USING (run, method, model, pretrained, task)
"""


def cells(rows: RowSet | pd.DataFrame, recall: bool = True) -> pd.DataFrame:
    """Long form, one line per (run, method, model, pretrained, task): n scored, correct, the three
    metrics, errors. Error rows are counted apart, never scored as wrong or right. Top-5 counts only
    rows that carry it (the worker leaves it empty where a task has fewer than 5 classes). Mean
    per-class recall averages the recall of every class that has a scored sample (sklearn's
    balanced_accuracy_score; left out with `recall=False`). Lines come in the rows' order (runs,
    teachers, the paper's method order)."""
    rowset = as_rowset(rows)
    out = rowset.query(CELLS_SQL if recall else COUNTS_SQL)
    if out.empty:
        return pd.DataFrame(columns=COLUMNS)
    orders = rowset.orders
    key = out.apply(lambda r: (orders.rank("teachers", (r.model, r.pretrained)), _method_rank(orders, r.method),
                               orders.rank("runs", r.run), orders.rank("tasks", r.task)), axis=1)
    out = out.iloc[sorted(range(len(out)), key=lambda i: key.iloc[i])].reset_index(drop=True)
    for column in ("n", "correct", "top5_n", "top5_correct", "errors"):
        out[column] = out[column].astype("int64")
    out["accuracy"] = 100.0 * out["correct"] / out["n"].where(out["n"] > 0)
    out["top5_accuracy"] = 100.0 * out["top5_correct"] / out["top5_n"].where(out["top5_n"] > 0)
    return out[COLUMNS]


def _method_rank(orders: Orders, method: str) -> tuple:
    """The paper's method order first (zeroshot, ensemble, tpt, apm), then the rows' own order."""
    from harness.report.tables import METHOD_ORDER

    return (METHOD_ORDER.index(method), 0, "") if method in METHOD_ORDER else (len(METHOD_ORDER), *orders.rank("methods", method))


def cell_estimate(row: object | None, metric: str, key: str, seed: int, resamples: int) -> Estimate:
    """The cell's value with a bootstrap interval where the metric is a mean of 0/1 outcomes."""
    if row is None or not row.n or pd.isna(getattr(row, metric)):  # type: ignore[attr-defined]
        return Estimate(None, None, None, 0)
    if metric in COUNTS:
        trials, hits = (int(getattr(row, c)) for c in COUNTS[metric])
        return estimate_counts(np.array([0.0, 1.0]), np.array([trials - hits, hits]), key, seed, resamples)
    return Estimate(float(getattr(row, metric)), None, None, int(row.n))  # type: ignore[attr-defined]


def pivot(long: pd.DataFrame, metric: str = "accuracy", seed: int = 0,
          resamples: int = RESAMPLES) -> tuple[list[str], list[list[str]]]:
    """Rows = method (with the run where runs are side by side, and the teacher when teachers are
    mixed), columns = tasks in order of appearance and their unweighted Average; each cell
    `value [95% interval] (n=N)`, `- (n=0)` where there is no scored sample, `n/a` where the metric
    does not apply."""
    tasks = list(dict.fromkeys(long["task"]))
    label_teacher = len(long[["model", "pretrained"]].drop_duplicates()) > 1
    has_errors = bool(long["errors"].sum()) if len(long) else False
    average = len(tasks) > 1
    headers = ["method", *tasks] + (["Average"] if average else []) + (["errors"] if has_errors else [])
    body = []
    for (run, method, model, pretrained), group in long.groupby(GROUP, sort=False):
        by_task = {row.task: row for row in group.itertuples()}
        label = method + (f" [{run}]" if run else "") + (f" ({model}/{pretrained})" if label_teacher else "")
        estimates = [cell_estimate(by_task.get(t), metric, f"{metric}|{run}|{method}|{model}|{pretrained}|{t}",
                                   seed, resamples) for t in tasks]
        line = [label] + [_text(by_task.get(t), e) for t, e in zip(tasks, estimates)]
        if average:  # over the tasks where the metric applies (top-5 needs 5 classes)
            rows = [by_task.get(t) for t in tasks]
            line.append(_average([e for r, e in zip(rows, estimates) if not (r is not None and r.n and e.value is None)],
                                 metric))
        if has_errors:
            line.append(str(int(group["errors"].sum())))
        body.append(line)
    return headers, body


def _interval(est: Estimate) -> str:
    return f" [{est.low:.1f}, {est.high:.1f}]" if est.low is not None and est.high is not None else ""


def _text(row: object | None, est: Estimate) -> str:
    if row is None or not row.n:  # type: ignore[attr-defined]
        return "- (n=0)"
    if est.value is None:
        return "n/a"
    return f"{est.value:.1f}{_interval(est)} (n={est.n})"


def _average(estimates: list[Estimate], metric: str) -> str:
    if not estimates:
        return "n/a"
    present = [e for e in estimates if e.value is not None]
    if len(present) < len(estimates):
        return f"- ({len(present)}/{len(estimates)} tasks)"
    if metric in COUNTS:
        mean = mean_of(estimates)
        return f"{mean.value:.1f}{_interval(mean)}" if mean is not None else "-"
    return f"{np.mean([e.value for e in estimates]):.1f}"
