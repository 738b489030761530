"""A run's result files, and which of them can be trusted.

Shards are written one file each as they finish (to a temporary name, then renamed); segments merge
finished shards into larger files. Every file, once in place, is recorded in `records.jsonl` with its
shards, row count, sha256 and the run's fingerprint (appended and fsynced; a line cut short by a crash
is ignored). A shard counts as finished only when a file holding it exists, matches its record and
belongs to this run: a file truncated by an interrupted copy, emptied, rewritten with rows missing or
with other columns, copied in from another run, or a symbolic link, is found, set aside in
`quarantine/` and run again. The folder itself, and who may touch it, is harness.rundir's."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from harness import interrupts
from harness.errors import HarnessError
from harness.rundir import QUARANTINE, RECORDS, SEGMENTS, SHARDS, STATES, read_manifest
from harness.store import SCHEMA, schema_problem

SEGMENT_KEY = b"apm_bench.shards"
FINGERPRINT_KEY = b"apm_bench.fingerprint"
SEGMENT_ROW_GROUP = 65_536


@dataclass(frozen=True)
class FileRecord:
    path: str
    """Relative to the run directory."""
    shards: tuple[str, ...]
    rows: int
    sha256: str
    fingerprint: str


@dataclass(frozen=True)
class Verdict:
    files: tuple[Path, ...]
    """Verified files, together holding each finished row once."""
    shards: frozenset[str]
    """Finished shards (in a verified file)."""
    bad: tuple[tuple[Path, str], ...]
    """Files that failed, each with a one-line reason."""
    lost: frozenset[str] = frozenset()
    """Shards that only failed files held: a resume runs them again."""


def shard_path(run_dir: Path, shard_id: str) -> Path:
    return run_dir / SHARDS / f"{shard_id}.parquet"


def write_parquet_atomic(table: pa.Table, final: Path, metadata: dict[bytes, bytes], **options: Any) -> Path:
    """Write beside `final` under a temporary name, then rename over it; no temporary file survives a
    failure, and a Ctrl-C that comes meanwhile takes effect once the file is whole (or removed). Mode
    0o666 less the umask (not mkstemp's 0600): others on a shared cluster can read it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(final.parent / f".{final.stem}.{secrets.token_hex(8)}.tmp")
    with interrupts.deferred():
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL: never another's file
        try:
            pq.write_table(table.replace_schema_metadata(metadata), tmp, **options)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return final


def write_shard(run_dir: Path, shard_id: str, table: pa.Table, fingerprint: str) -> Path:
    with interrupts.deferred():  # a shard on disk is a recorded shard
        path = write_parquet_atomic(table, shard_path(run_dir, shard_id), {FINGERPRINT_KEY: fingerprint.encode()})
        record(run_dir, path, [shard_id], table.num_rows, fingerprint)
    return path


def compact(run_dir: Path, shard_ids: list[str], prefix: str, fingerprint: str) -> Path:
    """Merge finished shards into one segment and delete them. The segment is renamed into place and
    recorded before any shard is deleted, so a compaction cut short at any point loses nothing and
    counts nothing twice (a verified segment's shards are skipped in their own files)."""
    paths = [shard_path(run_dir, shard) for shard in shard_ids]
    table = ds.dataset([str(p) for p in paths], schema=SCHEMA, format="parquet").to_table()
    metadata = {SEGMENT_KEY: json.dumps(sorted(shard_ids)).encode(), FINGERPRINT_KEY: fingerprint.encode()}
    segment = write_parquet_atomic(table, run_dir / SEGMENTS / f"{prefix}.{secrets.token_hex(6)}.parquet", metadata,
                                   row_group_size=SEGMENT_ROW_GROUP)
    record(run_dir, segment, shard_ids, table.num_rows, fingerprint)
    for path in paths:
        path.unlink(missing_ok=True)
    return segment


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def record(run_dir: Path, path: Path, shards: list[str], rows: int, fingerprint: str) -> None:
    """Append the file's record and fsync. A line cut short (a crash, a full disk) is skipped by
    `records`; the next append starts on a line of its own."""
    line = json.dumps({"path": path.relative_to(run_dir).as_posix(), "shards": sorted(shards), "rows": rows,
                       "sha256": sha256_file(path), "fingerprint": fingerprint})
    target = run_dir / RECORDS
    with open(target, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def records(run_dir: Path) -> dict[str, FileRecord]:
    """path -> its latest record."""
    found: dict[str, FileRecord] = {}
    try:
        text = (run_dir / RECORDS).read_text(errors="replace")
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise HarnessError(f"cannot read {run_dir / RECORDS}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        try:
            data = json.loads(line)
            found[data["path"]] = FileRecord(data["path"], tuple(data["shards"]), int(data["rows"]), data["sha256"],
                                             data["fingerprint"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short
    return found


def _files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / SEGMENTS).glob("*.parquet")) + sorted((run_dir / SHARDS).glob("*.parquet"))


def check(path: Path, rec: FileRecord | None, fingerprint: str | None, recorded: bool) -> str | None:
    """Why `path` cannot be trusted, in one line; None when it can. Runs written before records
    existed (`recorded` False) are checked for readability, columns and origin only."""
    try:
        info = path.lstat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link, not a file this run wrote"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    try:
        meta = pq.read_metadata(path)
        columns = schema_problem(meta.schema.to_arrow_schema())
    except (OSError, pa.ArrowException):
        return f"not a readable Parquet file ({info.st_size} bytes; cut short?)"
    if columns:
        return f"not this harness's rows ({columns})"
    origin = (meta.metadata or {}).get(FINGERPRINT_KEY)
    if fingerprint and origin and origin.decode(errors="replace") != fingerprint:
        return f"from another run (fingerprint {origin.decode(errors='replace')[:40]}, this run {fingerprint})"
    if not recorded:
        return None
    if rec is None:
        return "not recorded as finished (cut short before it was recorded, or copied in)"
    if meta.num_rows != rec.rows:
        return f"{meta.num_rows} rows, {rec.rows} recorded"
    if sha256_file(path) != rec.sha256:
        return "content differs from its recorded sha256 (changed or damaged)"
    return None


def verify(run_dir: Path, fingerprint: str | None = None, content: bool = True) -> Verdict:
    """Check every result file of the run: a full read of each (its sha256 against its record), or
    with `content` False its footer only (readable, this harness's columns, this run's)."""
    recorded = content and (run_dir / RECORDS).exists()
    recs = records(run_dir)
    good, bad = [], []
    for path in _files(run_dir):
        reason = check(path, recs.get(path.relative_to(run_dir).as_posix()), fingerprint, recorded)
        (bad.append((path, reason)) if reason else good.append(path))
    segments = [p for p in good if p.parent.name == SEGMENTS]
    covered = {s for p in segments for s in _shards_of(run_dir, p, recs)}
    loose = [p for p in good if p.parent.name == SHARDS and p.stem not in covered]
    finished = frozenset(covered | {p.stem for p in loose})
    held = {s for p, _ in bad for s in (_shards_of(run_dir, p, recs) if p.parent.name == SEGMENTS else [p.stem])}
    return Verdict(tuple(segments + loose), finished, tuple(bad), frozenset(held - finished))


def _shards_of(run_dir: Path, segment: Path, recs: dict[str, FileRecord]) -> tuple[str, ...]:
    rec = recs.get(segment.relative_to(run_dir).as_posix())
    return rec.shards if rec is not None else segment_shards(segment)


def segment_shards(path: Path) -> list[str]:
    """The shard ids a segment file holds, from its footer's metadata (no row is read); none for a
    file whose footer cannot be read (verify says why)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata.get(SEGMENT_KEY, b"[]"))
    except (OSError, ValueError, pa.ArrowException):
        return []


def quarantine(run_dir: Path, bad: tuple[tuple[Path, str], ...]) -> None:
    """Move files that failed verification aside (kept for inspection, never read again)."""
    for path, _ in bad:
        target = run_dir / QUARANTINE / f"{path.parent.name}-{path.name}.{int(time.time())}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def tidy(run_dir: Path, verdict: Verdict) -> None:
    """Delete what a cut-short run may leave: shard files a verified segment already holds, and
    temporary files of writes that never finished (a process killed mid-write)."""
    for path in (run_dir / SHARDS).glob("*.parquet"):
        if path.stem in verdict.shards and path not in verdict.files:
            path.unlink(missing_ok=True)
    for folder in (run_dir, run_dir / SHARDS, run_dir / SEGMENTS, run_dir / STATES):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def row_files(run_dir: Path) -> list[Path]:
    """The result files, each row once, without verifying them (cheap: for progress and listings)."""
    segments = sorted((run_dir / SEGMENTS).glob("*.parquet"))
    covered = {s for p in segments for s in segment_shards(p)}
    return segments + [p for p in sorted((run_dir / SHARDS).glob("*.parquet")) if p.stem not in covered]


def done_shards(run_dir: Path) -> set[str]:
    """Finished shards by the files present, without verifying them (cheap: for progress)."""
    segments = sorted((run_dir / SEGMENTS).glob("*.parquet"))
    return {p.stem for p in (run_dir / SHARDS).glob("*.parquet")} | {s for p in segments for s in segment_shards(p)}


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
