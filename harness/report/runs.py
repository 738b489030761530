"""`apm-bench runs`: the runs under a results folder, one line each, newest first. Only manifests and
the result files' Parquet footers (segments and shards) are read (row counts from the metadata, never a table), so listing a folder
of large runs stays instant and does not depend on the row schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tabulate import tabulate

from harness.errors import HarnessError
from harness.resultfiles import row_files, segment_shards
from harness.rundir import MANIFEST, SEGMENTS, read_manifest

HEADERS = ("run", "suite", "teacher", "methods", "samples", "shards finished", "unfinished", "failed", "started")
"""The table's columns; finished / unfinished / failed count shards."""


@dataclass(frozen=True)
class RunRecord:
    """One run as its manifest and shard files describe it."""

    run_id: str
    path: Path
    suite: str | None
    teacher: str
    """model/pretrained."""
    methods: tuple[str, ...]
    rows: int
    """Rows in the finished shards: one per (sample, method)."""
    samples_total: int | None
    """From the manifest where the run recorded it (newer runs); else progress is counted in shards."""
    shards_total: int | None
    shards_finished: int
    shards_failed: int
    """Recorded as failed and not finished since (a resume may have finished them)."""
    started: str
    problem: str | None = None
    """What could not be read (the manifest, or a shard)."""
    manifest_read: bool = True
    """False when the manifest itself is unreadable: the other fields are then placeholders."""

    @property
    def samples_done(self) -> int:
        return self.rows // max(len(self.methods), 1)

    @property
    def shards_unfinished(self) -> int | None:
        if self.shards_total is None:
            return None
        return max(self.shards_total - self.shards_finished - self.shards_failed, 0)


def _count(value: object) -> int | None:
    """A manifest count, or None where it is missing or not an integer (hand-edited, older runs)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_run(run_dir: Path) -> RunRecord:
    """The record of one run directory; an unreadable manifest or shard becomes `problem`, not an error,
    so that one damaged run does not hide the others."""
    try:
        manifest = read_manifest(run_dir)
    except HarnessError as exc:
        return RunRecord(run_dir.name, run_dir, None, "-", (), 0, None, None, 0, 0, "", str(exc), manifest_read=False)
    config = manifest.get("config") or {}
    teacher = config.get("teacher") or {}
    rows, done, problem = 0, set(), None
    for path in row_files(run_dir):  # merged segments and the shards not merged yet, each row once
        try:
            with pq.ParquetFile(path) as parquet:  # the footer only
                rows += parquet.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            problem = f"unreadable result file {path.name}: {exc}"
            continue
        done.update(segment_shards(path) if path.parent.name == SEGMENTS else [path.stem])
    failed = set(manifest.get("failed_shards") or {}) - done
    return RunRecord(
        run_id=str(manifest.get("run_id") or run_dir.name),
        path=run_dir,
        suite=config.get("suite"),
        teacher=f"{teacher.get('model', '?')}/{teacher.get('pretrained', '?')}",
        methods=tuple(config.get("methods") or ()),
        rows=rows,
        samples_total=_count(manifest.get("samples_total")),
        shards_total=_count(manifest.get("shards_total")),
        shards_finished=len(done),
        shards_failed=len(failed),
        started=str(manifest.get("started") or ""),
        problem=problem,
    )


def list_runs(root: Path) -> list[RunRecord]:
    """Every run directory under `root` (a folder holding a manifest), newest start first."""
    records = [read_run(path.parent) for path in root.glob(f"*/{MANIFEST}")]
    return sorted(records, key=lambda r: (r.started, r.run_id), reverse=True)


def _samples(record: RunRecord) -> str:
    if record.samples_total is not None:
        return f"{record.samples_done}/{record.samples_total}"
    total = "?" if record.shards_total is None else record.shards_total
    return f"{record.shards_finished}/{total} shards"


def render_runs(records: list[RunRecord], root: Path) -> str:
    """A plain-text table, one line per run, then one line per run that could not be read."""
    if not records:
        return f"no runs under {root}/ (start one with `apm-bench run`)"
    readable = [r for r in records if r.manifest_read]
    body = [[r.run_id, r.suite or "-", r.teacher, ",".join(r.methods) or "-", _samples(r), r.shards_finished,
             "?" if r.shards_unfinished is None else r.shards_unfinished, r.shards_failed, r.started or "-"]
            for r in readable]
    lines = [tabulate(body, headers=HEADERS, tablefmt="simple", disable_numparse=True)] if body else []
    lines += [f"{r.path}: {r.problem}" for r in records if r.problem]
    return "\n".join(lines)
