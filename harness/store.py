"""The row schema, and a run's manifest. A run directory's result files (shards, segments, their
records) are harness.rundir's."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from harness.errors import HarnessError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Row:
    """One (sample, method) result with the provenance needed to trust and pair it."""

    run_id: str
    fingerprint: str
    code_version: str
    task: str
    task_version: str
    data_source: str
    sample_id: str
    content_hash: str | None
    label: int
    n_classes: int
    """Classes the task is scored over: top-5 is recorded only where there are at least 5."""
    protocol: str
    """Where the class names and templates came from (`clip-imagenet`, `coop`, `clip-benchmark`, ...)."""
    method: str
    model: str
    pretrained: str
    weights_source: str
    weights_sha256: str | None
    """Content hash of the teacher's weights (None: random weights from the config's seed)."""
    seed: int
    prediction: int | None
    correct: bool | None
    top5: list[int]
    top5_correct: bool | None
    confidence: float | None
    prediction_before: int | None
    n_templates: int
    template_set: str | None
    """The name of the prompts the classifier came from (or, for a learned prompt, its start)."""
    ttt_steps: int
    loss_first: float | None
    loss_last: float | None
    losses: list[float]
    seconds: float
    flops: int | None
    peak_memory_bytes: int | None
    """The method's peak device memory above what was allocated when it started (CUDA only)."""
    peak_memory_samples: int | None
    """How many samples that peak covers (a batch of APMs trained together, or one sample)."""
    device: str
    precision: str
    """What the networks computed in: the requested precision on CUDA, fp32 on a CPU."""
    worker: str
    error: str | None


SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("fingerprint", pa.string()),
        ("code_version", pa.string()),
        ("task", pa.string()),
        ("task_version", pa.string()),
        ("data_source", pa.string()),
        ("sample_id", pa.string()),
        ("content_hash", pa.string()),
        ("label", pa.int32()),
        ("n_classes", pa.int32()),
        ("protocol", pa.string()),
        ("method", pa.string()),
        ("model", pa.string()),
        ("pretrained", pa.string()),
        ("weights_source", pa.string()),
        ("weights_sha256", pa.string()),
        ("seed", pa.int64()),
        ("prediction", pa.int32()),
        ("correct", pa.bool_()),
        ("top5", pa.list_(pa.int32())),
        ("top5_correct", pa.bool_()),
        ("confidence", pa.float64()),
        ("prediction_before", pa.int32()),
        ("n_templates", pa.int32()),
        ("template_set", pa.string()),
        ("ttt_steps", pa.int32()),
        ("loss_first", pa.float64()),
        ("loss_last", pa.float64()),
        ("losses", pa.list_(pa.float32())),
        ("seconds", pa.float64()),
        ("flops", pa.int64()),
        ("peak_memory_bytes", pa.int64()),
        ("peak_memory_samples", pa.int32()),
        ("device", pa.string()),
        ("precision", pa.string()),
        ("worker", pa.string()),
        ("error", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in dataclasses.fields(Row)], "Row and SCHEMA must list the same columns"


def rows_to_table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist([dataclasses.asdict(r) for r in rows], schema=SCHEMA)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic like write_shard, with the same umask-respecting mode; no temporary file survives a failure."""
    from harness import interrupts

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = str(run_dir / f".manifest.{secrets.token_hex(8)}.tmp")
    with interrupts.deferred():
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
            os.replace(tmp, run_dir / MANIFEST)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"not a run directory (no {MANIFEST}): {run_dir}") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"unreadable manifest {path}: {exc}") from None


def read_rows(run_dirs: list[Path]) -> pd.DataFrame:
    """Every row of the named runs, in pandas: for tests and small runs (reports query the files with
    harness.report.rowset instead, in bounded memory)."""
    from harness import rundir  # it imports this module's schema
    files = []
    for run_dir in run_dirs:
        read_manifest(run_dir)
        files += [str(p) for p in rundir.row_files(run_dir)]
    if not files:
        return SCHEMA.empty_table().to_pandas()
    return ds.dataset(files, schema=SCHEMA, format="parquet").to_table().to_pandas()
