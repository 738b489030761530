"""Run directories for the HTML report's tests, written the way a run writes them (a manifest with
config, execution, versions and environments; rows in a verified shard), from rows made here: the
Fashion-MNIST-C layout with every built-in method on the real test-set sample ids and labels (so the
gallery loads the real images from Debian's dataset-fashion-mnist, where installed), and the drawn
`synthetic` task, whose images need no data at all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import resultfiles, rundir
from harness.report.tables import FASHION_MNIST_C
from harness.store import Row, rows_to_table
from tasks.registry import EVERY_METHOD
from test_report_tables import make_row

TEACHER = {"model": "apm-mini", "pretrained": "fashion-mnist-teacher"}
SHA = "5f1d" * 16
FASHION_TASKS = ("fashion-mnist",) + FASHION_MNIST_C
SECONDS = {"zeroshot": 0.002, "ensemble": 0.002, "mta": 0.02, "zero": 0.02, "apm": 0.4}
"""Median seconds per sample; zero-shot and the ensemble cost the same (one teacher pass)."""


def fashion_labels(count: int) -> list[int]:
    """The real labels of the first test images where the data is installed, else a fixed pattern."""
    from tasks.fashion_mnist import DEBIAN_ROOT, load_split, split_files

    if split_files(Path(DEBIAN_ROOT), "test") is None:
        return [i % 10 for i in range(count)]
    return [int(v) for v in load_split(DEBIAN_ROOT, "test")[1][:count]]


def hit(method: str, column: int, sample: int) -> bool:
    """A known, different pattern per method and column (zero-shot: index 0)."""
    shift = EVERY_METHOD.index(method) if method in EVERY_METHOD else 1
    return (sample * (column + 1) + shift) % 3 != 0


def row(task: str, method: str, sample_id: str, label: int, correct: bool, before: int | None, classes: int = 10,
        **teacher: str) -> Row:
    base = make_row(task, method, 0, correct, seconds=SECONDS.get(method, 0.05), **(teacher or TEACHER),
                    losses=[2.0 / (s + 1) for s in range(10 if method == "apm" else 1)] if method not in
                    ("zeroshot", "ensemble") else ())
    prediction = label if correct else (label + 1) % classes
    return dataclasses.replace(base, sample_id=sample_id, label=label, n_classes=classes, prediction=prediction,
                               prediction_before=None if method == "zeroshot" else before, weights_sha256=SHA)


def fashion_rows(methods: tuple[str, ...] = EVERY_METHOD, per_task: int = 6) -> list[Row]:
    labels = fashion_labels(per_task)
    rows = []
    for column, task in enumerate(FASHION_TASKS):
        for i, label in enumerate(labels):
            before = label if hit("zeroshot", column, i) else (label + 1) % 10
            rows += [row(task, m, f"t10k/{i:05d}", label, hit(m, column, i), before) for m in methods]
    return rows


def write_run(root: Path, name: str, rows: list[Row], tasks: tuple[str, ...], methods: tuple[str, ...],
              samples_total: int | None = None, teacher: dict | None = None) -> Path:
    """A run directory as `apm-bench run` leaves it; unfinished where `samples_total` exceeds its samples."""
    run_dir = root / name
    teacher = teacher or TEACHER
    samples = len({(r.task, r.sample_id) for r in rows})
    total = samples if samples_total is None else samples_total
    rundir.write_manifest(run_dir, {
        "run_id": name, "fingerprint": "f", "code_version": "0123abcd", "layout": 2,
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T01:00:00+00:00" if total == samples else None,
        "samples_total": total, "shards_total": 1, "failed_shards": {},
        "config": {"tasks": list(tasks), "methods": list(methods), "seed": 0, "suite": None, "device_type": "cpu",
                   "teacher": {**teacher, "weights_sha256": SHA, "precision": "fp32"},
                   "settings": {"apm": {"steps": 10, "lr": 0.001, "hidden": [256, 128]}},
                   "data": {"source": "disk", "limit": None, "corruptions": "released"}},
        "execution": {"data_root": None, "workers": 2, "device": "cpu"},
        "versions": {"python": "3.11.7", "torch": "2.4.0", "open_clip_torch": "3.3.0"},
        "environments": {"deca2ca12668": {"device": "Intel(R) Xeon(R) Processor", "torch": "2.4.0"}},
    })
    rows = [dataclasses.replace(r, run_id=name) for r in rows]
    resultfiles.write_shard(run_dir, "s-00000", rows_to_table(rows), "f")
    return run_dir


def fashion_run(root: Path, name: str = "fashion", samples_total: int | None = None) -> Path:
    return write_run(root, name, fashion_rows(), FASHION_TASKS, EVERY_METHOD, samples_total)


def synthetic_run(root: Path, name: str = "shapes", spec: str = "synthetic") -> Path:
    """zeroshot and apm on the drawn shapes (images always available), apm changing some answers."""
    from tasks.synthetic import CLASSNAMES, SyntheticTask

    refs = SyntheticTask().samples()
    rows = []
    for i, ref in enumerate(refs):
        before = ref.label if i % 3 else (ref.label + 1) % len(CLASSNAMES)
        zs = row("synthetic", "zeroshot", ref.sample_id, ref.label, i % 3 != 0, None, len(CLASSNAMES))
        rows += [dataclasses.replace(zs, prediction=before),
                 row("synthetic", "apm", ref.sample_id, ref.label, i % 4 != 0, before, len(CLASSNAMES))]
    return write_run(root, name, rows, (spec,), ("zeroshot", "apm"))
