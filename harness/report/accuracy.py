"""Top-1, top-5 and mean per-class recall per (method, teacher) x task, with n, from the rows of one
or more runs. The three are CLIP_benchmark's classification metrics."""

from __future__ import annotations

import pandas as pd

KEYS = ["method", "model", "pretrained", "task"]
COLUMNS = [*KEYS, "n", "correct", "accuracy", "top5_accuracy", "mean_per_class_recall", "errors"]

METRICS: dict[str, str] = {
    "accuracy": "Top-1 accuracy (%)",
    "top5_accuracy": "Top-5 accuracy (%), tasks with at least 5 classes",
    "mean_per_class_recall": "Mean per-class recall (%), i.e. balanced accuracy",
}
"""Column of `cells` -> the title of its table."""


def cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Long form, one line per (method, model, pretrained, task): n scored, correct, the three metrics,
    errors. Error rows are counted apart, never scored as wrong or right. Top-5 counts only rows that
    carry it (the worker leaves it empty where a task has fewer than 5 classes). Mean per-class recall
    averages the recall of every class that has a scored sample (sklearn's balanced_accuracy_score)."""
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    scored = rows["error"].isna()
    frame = rows.assign(
        scored=scored,
        hit=rows["correct"].fillna(False).astype(bool) & scored,
        has5=rows["top5_correct"].notna() & scored,
        hit5=rows["top5_correct"].fillna(False).astype(bool) & scored,
    )
    grouped = frame.groupby(KEYS, sort=False, dropna=False)
    out = pd.DataFrame(
        {
            "n": grouped["scored"].sum(),
            "correct": grouped["hit"].sum(),
            "has5": grouped["has5"].sum(),
            "top5_correct": grouped["hit5"].sum(),
            "errors": grouped["scored"].size() - grouped["scored"].sum(),
        }
    )
    per_class = frame[frame["scored"]].groupby([*KEYS, "label"], sort=False, dropna=False)["hit"].mean()
    out["mean_per_class_recall"] = 100.0 * per_class.groupby(level=KEYS, sort=False, dropna=False).mean()
    out = out.reset_index()
    out["accuracy"] = 100.0 * out["correct"] / out["n"].where(out["n"] > 0)
    out["top5_accuracy"] = 100.0 * out.pop("top5_correct") / out.pop("has5").where(lambda h: h > 0)
    return out[COLUMNS]


def pivot(long: pd.DataFrame, metric: str = "accuracy") -> tuple[list[str], list[list[str]]]:
    """Rows = method (with the teacher when runs mix teachers), columns = tasks in order of appearance;
    each cell `value (n=N)`, `-` where there is no scored sample, `n/a` where the metric does not apply."""
    tasks = list(dict.fromkeys(long["task"]))
    teachers = long[["model", "pretrained"]].drop_duplicates()
    label_teacher = len(teachers) > 1
    has_errors = bool(long["errors"].sum()) if len(long) else False
    headers = ["method", *tasks] + (["errors"] if has_errors else [])
    body = []
    for (method, model, pretrained), group in long.groupby(["method", "model", "pretrained"], sort=False):
        by_task = {row.task: row for row in group.itertuples()}
        label = f"{method} ({model}/{pretrained})" if label_teacher else method
        line = [label] + [_cell(by_task.get(task), metric) for task in tasks]
        if has_errors:
            line.append(str(int(group["errors"].sum())))
        body.append(line)
    return headers, body


def _cell(row: object | None, metric: str) -> str:
    if row is None or not row.n:  # type: ignore[attr-defined]
        return "- (n=0)"
    value = getattr(row, metric)
    if pd.isna(value):
        return "n/a"
    return f"{value:.1f} (n={int(row.n)})"  # type: ignore[attr-defined]
