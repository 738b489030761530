"""What a report reads, and how rows of several runs are combined.

Several runs are pooled only when no (task, sample, method, teacher) appears in more than one of them
(a benchmark split into runs); otherwise each run keeps its own rows, side by side, with a run label,
so an interrupted run and its complete twin never count a sample twice. The report says which runs it
read and which are unfinished, with how many samples they miss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import store
from harness.errors import HarnessError

UNIT = ["task", "sample_id", "method", "model", "pretrained"]
"""One measurement: the same unit in two runs is the same sample measured twice."""


@dataclass(frozen=True)
class RunRead:
    run_dir: Path
    rows: int
    samples: int
    """Distinct (task, sample) pairs with rows."""
    samples_total: int | None
    """Samples the run plans (newer manifests record it)."""
    shards_done: int
    shards_total: int | None
    failed: int
    """Shards given up on after repeated failures."""

    @property
    def finished(self) -> bool:
        if self.failed:
            return False
        if self.samples_total is not None:
            return self.samples >= self.samples_total
        return self.shards_total is not None and self.shards_done >= self.shards_total

    def describe(self) -> str:
        state = "finished" if self.finished else "NOT FINISHED: " + self._missing()
        return f"{self.run_dir} ({self.rows} rows, {self.samples} samples; {state})"

    def _missing(self) -> str:
        parts = []
        if self.samples_total is not None:
            parts.append(f"{self.samples_total - self.samples} of {self.samples_total} samples missing")
        elif self.shards_total is not None:
            parts.append(f"{self.shards_total - self.shards_done} of {self.shards_total} shards missing")
        if self.failed:
            parts.append(f"{self.failed} failed shard(s)")
        return ", ".join(parts) + f"; finish it with: apm-bench run --resume {self.run_dir}"


@dataclass(frozen=True)
class ReportInput:
    rows: pd.DataFrame
    """Every row read, with a `run` column: the run id where runs are shown side by side, else ""."""
    runs: tuple[RunRead, ...]
    notes: tuple[str, ...]
    """What was read and how it was combined, for the report's notes."""


def _read_one(run_dir: Path) -> tuple[RunRead, pd.DataFrame]:
    manifest = store.read_manifest(run_dir)
    rows = store.read_rows([run_dir])
    samples = len(rows[["task", "sample_id"]].drop_duplicates()) if len(rows) else 0
    read = RunRead(run_dir, len(rows), samples, manifest.get("samples_total"), len(store.done_shards(run_dir)),
                   manifest.get("shards_total"), len(manifest.get("failed_shards") or {}))
    return read, rows


def newest_run_with_rows(root: Path) -> tuple[Path, int]:
    """The newest run under `root` (by start time) that has at least one shard, and how many newer
    runs had none."""
    runs = sorted((p.parent for p in root.glob(f"*/{store.MANIFEST}")),
                  key=lambda d: (store.read_manifest(d).get("started", ""), d.name), reverse=True)
    if not runs:
        raise HarnessError(f"no runs under {root}/ (run `apm-bench run` first, or name a run directory)")
    for skipped, run_dir in enumerate(runs):
        if store.done_shards(run_dir):
            return run_dir, skipped
    raise HarnessError(f"no run under {root}/ has a finished shard yet ({len(runs)} run(s) without any)")


def read_report_input(run_dirs: list[Path] | None, root: Path) -> ReportInput:
    notes = []
    if not run_dirs:
        newest, skipped = newest_run_with_rows(root)
        run_dirs = [newest]
        if skipped:
            notes.append(f"Skipped {skipped} newer run(s) under {root}/ without any finished shard.")
    reads = []
    frames = []
    for run_dir in run_dirs:
        read, rows = _read_one(run_dir)
        if not read.rows:
            notes.append(f"Skipped {run_dir}: no finished shard yet.")
            continue
        reads.append(read)
        frames.append(rows)
    if not reads:
        raise HarnessError(f"no rows to report: {', '.join(map(str, run_dirs))} ha{'s' if len(run_dirs) == 1 else 've'} "
                           "no finished shard yet")
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    notes.insert(0, "Read: " + "; ".join(r.describe() for r in reads) + ".")
    overlap = len(frames) > 1 and bool(rows.duplicated(subset=UNIT).any())
    if overlap:
        notes.append("These runs measured some of the same samples, so they are not pooled: each run has its own "
                     "rows, labelled by run id.")
        rows = rows.assign(run=rows["run_id"])
    else:
        if len(frames) > 1:
            notes.append("These runs share no sample, method and teacher, so their rows are pooled.")
        rows = rows.assign(run="")
    return ReportInput(rows, tuple(reads), tuple(notes))
