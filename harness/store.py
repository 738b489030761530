"""The run directory: a manifest, one Parquet file per finished shard (written to a temporary name and
renamed, so a file that exists is complete), and segments that merge finished shards into larger files.
The report reads only these files."""

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
import pyarrow.parquet as pq

from harness.errors import HarnessError

MANIFEST = "manifest.json"
SHARDS = "shards"
SEGMENTS = "segments"
"""Finished shards merged into larger files (compact), so 50,000 images leave tens of files, not 47,000."""
SEGMENT_KEY = b"apm_bench.shards"
SEGMENT_ROW_GROUP = 65_536


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
    device: str
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
        ("device", pa.string()),
        ("worker", pa.string()),
        ("error", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in dataclasses.fields(Row)], "Row and SCHEMA must list the same columns"


def rows_to_table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist([dataclasses.asdict(r) for r in rows], schema=SCHEMA)


def shard_path(run_dir: Path, shard_id: str) -> Path:
    return run_dir / SHARDS / f"{shard_id}.parquet"


def write_shard(run_dir: Path, shard_id: str, table: pa.Table) -> Path:
    """Atomic (written under a temporary name, then renamed), readable by others (mode 0644 under the
    usual umask)."""
    return _atomic_parquet(table, shard_path(run_dir, shard_id))


def _atomic_parquet(table: pa.Table, final: Path, **options: Any) -> Path:
    """Write beside `final` under a temporary name, then rename over it. The temporary file is created
    with mode 0o666 less the umask (not mkstemp's 0600), so that, as with any file the user writes,
    others on a shared cluster can read the results; O_EXCL: never another's file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(final.parent / f".{final.stem}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def segment_shards(path: Path) -> list[str]:
    """The shard ids a segment file holds, from its footer's metadata (no row is read)."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(SEGMENT_KEY, b"[]"))


def segment_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / SEGMENTS).glob("*.parquet"))


def covered_shards(run_dir: Path) -> set[str]:
    return {shard for path in segment_files(run_dir) for shard in segment_shards(path)}


def done_shards(run_dir: Path) -> set[str]:
    """Finished shards: those in segments, and those still in their own file."""
    return {p.stem for p in (run_dir / SHARDS).glob("*.parquet")} | covered_shards(run_dir)


def row_files(run_dir: Path) -> list[Path]:
    """The files holding a run's rows, each row once: every segment, and every shard file no segment
    holds (a compaction cut short after its segment was renamed into place leaves both)."""
    covered = covered_shards(run_dir)
    loose = [p for p in sorted((run_dir / SHARDS).glob("*.parquet")) if p.stem not in covered]
    return segment_files(run_dir) + loose


def compact(run_dir: Path, shard_ids: list[str], prefix: str) -> Path:
    """Merge finished shards into one segment file (row groups of SEGMENT_ROW_GROUP rows) and delete
    them. The segment names its shards in its footer and is renamed into place before any shard is
    deleted, so a compaction cut short at any point loses nothing and duplicates nothing (row_files)."""
    paths = [shard_path(run_dir, shard) for shard in shard_ids]
    table = ds.dataset([str(p) for p in paths], schema=SCHEMA, format="parquet").to_table()
    table = table.replace_schema_metadata({SEGMENT_KEY: json.dumps(sorted(shard_ids))})
    segment = _atomic_parquet(table, run_dir / SEGMENTS / f"{prefix}.{secrets.token_hex(6)}.parquet",
                              row_group_size=SEGMENT_ROW_GROUP)
    for path in paths:
        path.unlink(missing_ok=True)
    return segment


def tidy(run_dir: Path) -> None:
    """Delete shard files a segment already holds (left by a compaction that was cut short)."""
    covered = covered_shards(run_dir)
    for path in (run_dir / SHARDS).glob("*.parquet"):
        if path.stem in covered:
            path.unlink(missing_ok=True)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic like write_shard, with the same umask-respecting mode; no temporary file survives a failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = str(run_dir / f".manifest.{secrets.token_hex(8)}.tmp")
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
    files = []
    for run_dir in run_dirs:
        read_manifest(run_dir)
        files += [str(p) for p in row_files(run_dir)]
    if not files:
        return SCHEMA.empty_table().to_pandas()
    return ds.dataset(files, schema=SCHEMA, format="parquet").to_table().to_pandas()
