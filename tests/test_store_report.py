import dataclasses

import numpy as np
import pandas as pd
import pytest

from harness import resultfiles, rundir, store
from harness.report.accuracy import cells
from harness.report.stats import estimate
from harness.report.render import render
from harness.store import Row, rows_to_table


def _row(task: str, method: str, i: int, correct: bool | None, error: str | None = None, model="apm-tiny",
         label: int = 1, n_classes: int = 10) -> Row:
    top5 = None if correct is None or n_classes < 5 else True
    return Row(
        run_id="r", fingerprint="f", code_version="c", task=task, task_version="1", data_source="drawn", sample_id=f"s{i}",
        content_hash="h", label=label, n_classes=n_classes, protocol="apm-bench", method=method, model=model, pretrained="none", weights_source="none", weights_sha256=None, seed=i,
        prediction=None if correct is None else (1 if correct else 0), correct=correct, top5=[1, 0],
        top5_correct=top5, confidence=0.5, prediction_before=None, n_templates=1, template_set="single",
        ttt_steps=0, loss_first=None, loss_last=None, losses=[], seconds=0.1, flops=None, peak_memory_bytes=None, peak_memory_samples=None, device="cpu", precision="fp32", worker="w", error=error,
    )


def _run_dir(tmp_path, name: str, rows: list[Row], started: str = "2026-01-01T00:00:00"):
    run_dir = tmp_path / name
    rundir.write_manifest(run_dir, {"run_id": name, "started": started})
    resultfiles.write_shard(run_dir, "t-00000", rows_to_table(rows), "f")
    return run_dir


def test_shard_write_is_atomic_and_round_trips(tmp_path):
    rows = [_row("a", "zeroshot", i, i % 2 == 0) for i in range(5)]
    run_dir = _run_dir(tmp_path, "run", rows)
    assert resultfiles.done_shards(run_dir) == {"t-00000"}
    assert not list((run_dir / "shards").glob("*.tmp")) and not list((run_dir / "shards").glob(".*"))
    back = resultfiles.read_rows([run_dir])
    assert len(back) == 5 and list(back.columns) == store.SCHEMA.names
    assert back["correct"].tolist() == [True, False, True, False, True]


def test_markdown_report_golden(tmp_path):
    rows = (
        [_row("synthetic", "zeroshot", i, i < 3) for i in range(4)]  # 3/4
        + [_row("synthetic", "apm", i, i < 1) for i in range(4)]  # 1/4
        + [_row("other", "zeroshot", i, True) for i in range(2)]  # 2/2
        + [_row("other", "apm", 9, None, error="cannot decode image x.jpg")]  # error only: no score
    )
    text = render(resultfiles.read_rows([_run_dir(tmp_path, "run", rows)]), "markdown")
    top1 = text.split("\n\n")[:2]
    assert top1 == [
        "Top-1 accuracy (%)",
        "| method   | synthetic                | other                      | Average            | errors   |\n"
        "|----------|--------------------------|----------------------------|--------------------|----------|\n"
        "| zeroshot | 75.0 [25.0, 100.0] (n=4) | 100.0 [100.0, 100.0] (n=2) | 87.5 [62.5, 100.0] | 0        |\n"
        "| apm      | 25.0 [0.0, 75.0] (n=4)   | - (n=0)                    | - (1/2 tasks)      | 1        |",
    ]
    # the interval is the bootstrap of the cell's own outcomes (drawn from counts, the same draws)
    est = estimate(np.array([1.0, 1.0, 1.0, 0.0]), "accuracy||zeroshot|apm-tiny|none|synthetic")
    assert f"75.0 [{est.low:.1f}, {est.high:.1f}] (n=4)" in top1[1]
    assert "Top-5 accuracy (%), tasks with at least 5 classes" in text and "Mean per-class recall" in text


def test_mean_per_class_recall_is_sklearns_balanced_accuracy_and_top5_needs_5_classes(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    labels[:3] = 3  # a frequent class, so plain and balanced accuracy differ
    correct = rng.random(60) < np.where(labels == 3, 0.9, 0.3)
    rows = [_row("four", "zeroshot", i, bool(c), label=int(y), n_classes=4) for i, (y, c) in enumerate(zip(labels, correct))]
    rows += [_row("ten", "zeroshot", i, i % 3 == 0, label=i % 10, n_classes=10) for i in range(30)]
    rows += [_row("ten", "zeroshot", 99, None, error="cannot decode image x.jpg", label=7)]
    long = cells(resultfiles.read_rows([_run_dir(tmp_path, "run", rows)])).set_index("task")
    predictions = np.where(correct, labels, (labels + 1) % 4)  # a wrong answer is another class
    assert long.loc["four", "mean_per_class_recall"] == pytest.approx(100 * balanced_accuracy_score(labels, predictions))
    assert long.loc["four", "mean_per_class_recall"] != pytest.approx(long.loc["four", "accuracy"])
    assert np.isnan(long.loc["four", "top5_accuracy"]) and long.loc["ten", "top5_accuracy"] == 100.0
    markdown = render(resultfiles.read_rows([_run_dir(tmp_path, "run2", rows)]), "markdown")
    top5 = markdown.split("Top-5 accuracy")[1].split("Mean per-class")[0]
    assert "| n/a    | 100.0 [100.0, 100.0] (n=30) | 100.0 [100.0, 100.0] |" in top5  # the average skips n/a


def test_csv_is_long_form_with_every_cell(tmp_path):
    rows = [_row("t", "zeroshot", i, i == 0) for i in range(3)] + [_row("t", "zeroshot", 5, True, model="ViT-B-16")]
    text = render(resultfiles.read_rows([_run_dir(tmp_path, "run", rows)]), "csv")
    frame = pd.read_csv(pd.io.common.StringIO(text))
    assert frame[["model", "n", "correct"]].values.tolist() == [["apm-tiny", 3, 1], ["ViT-B-16", 1, 1]]
    assert frame["accuracy"].round(2).tolist() == [33.33, 100.0]


def test_latex_uses_booktabs_and_labels_teachers_when_mixed(tmp_path):
    rows = [_row("t", "zeroshot", 0, True), _row("t", "zeroshot", 1, True, model="ViT-B-16")]
    text = render(resultfiles.read_rows([_run_dir(tmp_path, "run", rows)]), "latex")
    assert "\\toprule" in text and "zeroshot (ViT-B-16/none)" in text and "zeroshot (apm-tiny/none)" in text


def test_row_and_schema_agree():
    assert [f.name for f in dataclasses.fields(Row)] == store.SCHEMA.names
