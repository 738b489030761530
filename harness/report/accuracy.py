"""Accuracy per (method, teacher) x task, with n, from the rows of one or more runs."""

from __future__ import annotations

import pandas as pd

KEYS = ["method", "model", "pretrained", "task"]


def cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Long form, one line per (method, model, pretrained, task): n scored, correct, accuracy, errors.
    Error rows are counted apart, never scored as wrong or right."""
    if rows.empty:
        return pd.DataFrame(columns=[*KEYS, "n", "correct", "accuracy", "top5_accuracy", "errors"])
    scored = rows["error"].isna()
    frame = rows.assign(
        scored=scored,
        hit=rows["correct"].fillna(False).astype(bool) & scored,
        hit5=rows["top5_correct"].fillna(False).astype(bool) & scored,
    )
    grouped = frame.groupby(KEYS, sort=False, dropna=False)
    out = pd.DataFrame(
        {
            "n": grouped["scored"].sum(),
            "correct": grouped["hit"].sum(),
            "top5_correct": grouped["hit5"].sum(),
            "errors": grouped["scored"].size() - grouped["scored"].sum(),
        }
    ).reset_index()
    n = out["n"].where(out["n"] > 0)
    out["accuracy"] = 100.0 * out["correct"] / n
    out["top5_accuracy"] = 100.0 * out.pop("top5_correct") / n
    return out[[*KEYS, "n", "correct", "accuracy", "top5_accuracy", "errors"]]


def pivot(long: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Rows = method (with the teacher when runs mix teachers), columns = tasks in order of appearance;
    each cell `acc (n=N)`, `-` where there is no scored sample."""
    tasks = list(dict.fromkeys(long["task"]))
    teachers = long[["model", "pretrained"]].drop_duplicates()
    label_teacher = len(teachers) > 1
    has_errors = bool(long["errors"].sum()) if len(long) else False
    headers = ["method", *tasks] + (["errors"] if has_errors else [])
    body = []
    for (method, model, pretrained), group in long.groupby(["method", "model", "pretrained"], sort=False):
        by_task = {row.task: row for row in group.itertuples()}
        label = f"{method} ({model}/{pretrained})" if label_teacher else method
        line = [label] + [_cell(by_task.get(task)) for task in tasks]
        if has_errors:
            line.append(str(int(group["errors"].sum())))
        body.append(line)
    return headers, body


def _cell(row: object | None) -> str:
    if row is None or not row.n:  # type: ignore[attr-defined]
        return "- (n=0)"
    return f"{row.accuracy:.1f} (n={int(row.n)})"  # type: ignore[attr-defined]
