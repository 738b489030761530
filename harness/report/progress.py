"""How far the runs a report read got, and so which of its cells are complete.

A cell is complete when every run whose rows it holds has all of that task's samples: known per task
for a finished run, or for a run of one task whose manifest records its total (the manifest records
one total per run, not per task). An unfinished run of several tasks may have finished some of them,
but nothing recorded says which, so none of its cells counts as complete. Reports print a marker for
each unfinished run in the body of every format, and leave an average blank unless every column it
averages is complete: an average over a part of the samples reads as a result when it is not one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.report.values import Cell


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
    finished_at: str | None = None
    """When the run recorded its end (manifests without totals say no more than that)."""
    run_ids: tuple[str, ...] = ()
    """The run ids its rows carry (one, the manifest's, for a run apm-bench wrote)."""
    task_samples: tuple[tuple[str, int], ...] = ()
    """(task, distinct samples with rows), per task with rows."""
    tasks: tuple[str, ...] = ()
    """The tasks its config plans (empty for manifests without a config)."""

    @property
    def finished(self) -> bool:
        if self.failed:
            return False
        if self.samples_total is not None:
            return self.samples >= self.samples_total
        if self.shards_total is not None:
            return self.shards_done >= self.shards_total
        return self.finished_at is not None

    def task_total(self, task: str) -> int | None:
        """The task's planned samples where known: all it has in a finished run; the run's total in a
        run of this one task."""
        done = dict(self.task_samples).get(task, 0)
        if self.finished:
            return done
        planned = self.tasks or tuple(t for t, _ in self.task_samples)
        return self.samples_total if self.samples_total is not None and planned == (task,) else None

    def task_complete(self, task: str) -> bool:
        total = self.task_total(task)
        return total is not None and dict(self.task_samples).get(task, 0) >= total

    def task_missing(self, task: str) -> int | None:
        """Samples of `task` still to come, where known."""
        total = self.task_total(task)
        return None if total is None else max(total - dict(self.task_samples).get(task, 0), 0)

    def shortfall(self) -> str:
        """What is missing, e.g. `4 of 10 samples missing`; "" for a finished run."""
        if self.finished:
            return ""
        parts = []
        if self.samples_total is not None:
            parts.append(f"{self.samples_total - self.samples} of {self.samples_total} samples missing")
        elif self.shards_total is not None:
            parts.append(f"{self.shards_total - self.shards_done} of {self.shards_total} shards missing")
        else:
            parts.append("no end recorded")
        if self.failed:
            parts.append(f"{self.failed} failed shard(s)")
        return ", ".join(parts)

    @property
    def resume(self) -> str:
        return f"apm-bench run --resume {self.run_dir}"

    def describe(self) -> str:
        state = "finished" if self.finished else f"NOT FINISHED: {self.shortfall()}; finish it with: {self.resume}"
        return f"{self.run_dir} ({self.rows} rows, {self.samples} samples; {state})"

    def marker(self) -> str:
        """The line every format prints in its body for an unfinished run."""
        return f"Not finished: {self.shortfall()}; finish it with: {self.resume}"

    @property
    def label(self) -> str:
        return self.run_ids[0] if len(self.run_ids) == 1 else self.run_dir.name


@dataclass(frozen=True)
class CellProgress:
    finished: bool | None
    """None when nothing is known: rows given without their runs (a DataFrame), or a cell of no run read."""
    missing: int | None = None
    """Samples of the cell's task its runs still miss, where known (0 when finished)."""
    status: str = ""
    """`not finished: 4 of 10 samples missing (run-b)` for each unfinished run of the cell."""

    @property
    def complete(self) -> bool:
        """Unknown counts as complete, as reports did before runs recorded their totals."""
        return self.finished is not False


UNKNOWN = CellProgress(None)


@dataclass(frozen=True)
class Progress:
    runs: tuple[RunRead, ...] = ()

    def _reads(self, run_ids: Iterable[str]) -> list[RunRead]:
        wanted = set(run_ids)
        return [r for r in self.runs if wanted & set(r.run_ids)]

    def cell(self, task: str, run_ids: Iterable[str]) -> CellProgress:
        """The cell of `task` made from the rows of `run_ids`; with none (a cell without data), every
        run read counts, since any of them may yet bring its rows."""
        ids = tuple(run_ids)
        reads = self._reads(ids) if ids else list(self.runs)
        if not reads:
            return UNKNOWN
        open_ = [r for r in reads if not r.task_complete(task)]
        missing = [r.task_missing(task) for r in reads]
        total = None if any(m is None for m in missing) else sum(m for m in missing if m is not None)
        status = "; ".join(f"not finished: {r.shortfall()} ({r.label})" for r in open_)
        return CellProgress(not open_, total, status)

    @staticmethod
    def combine(cells: Iterable[CellProgress | Cell]) -> CellProgress:
        """The progress of a column computed from others (an average, a paired difference)."""
        cells = list(cells)
        if not cells or all(c.finished is None for c in cells):
            return UNKNOWN
        missing = [c.missing for c in cells]
        total = None if any(m is None for m in missing) else sum(m for m in missing if m is not None)
        status = "; ".join(dict.fromkeys(s for c in cells for s in c.status.split("; ") if s))
        return CellProgress(all(c.finished is not False for c in cells), total, status)

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.runs)

    def markers(self) -> tuple[str, ...]:
        """One line per unfinished run, for the body of every format."""
        return tuple(r.marker() for r in self.runs if not r.finished)


NO_PROGRESS = Progress()
"""Rows given without their runs: every cell's state is unknown, and counts as complete."""
