"""What a report reads, and how rows of several runs are combined.

Several runs are pooled only when no (task, sample, method, teacher) appears in more than one of them
(a benchmark split into runs); otherwise each run keeps its own rows, side by side, with a run label,
so an interrupted run and its complete twin never count a sample twice. The report says which runs it
read and which are unfinished, with how many samples they miss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import resultfiles, rundir
from harness.errors import HarnessError
from harness.report.progress import Progress, RunRead
from harness.report.rowset import Orders, RowSet

__all__ = ["ReportInput", "RunRead", "newest_run_with_rows", "read_report_input"]  # RunRead: as before


@dataclass(frozen=True)
class ReportInput:
    rows: RowSet
    """Every row read, as a query view; its `run` is the run id where runs are side by side, else ""."""
    runs: tuple[RunRead, ...]
    notes: tuple[str, ...]
    """What was read and how it was combined, for the report's notes."""

    @property
    def progress(self) -> Progress:
        """How far each run got: which cells are complete, and the unfinished markers."""
        return Progress(self.runs)


RUN_STATS_SQL = """
SELECT task, count(*) AS n, count(DISTINCT sample_id) AS samples, list(DISTINCT run_id) AS ids FROM all_rows GROUP BY task
"""
"""Per task of one run (out-of-distribution tasks included): rows, samples with rows, and the run ids the rows carry."""
OVERLAP_SQL = """
WITH measured AS (SELECT run_id, task, sample_id, method, model, pretrained, coalesce(attack, '') AS attack FROM all_rows),
cells AS (SELECT DISTINCT run_id, task, method, model, pretrained, attack FROM measured),
shared AS (SELECT task, method, model, pretrained, attack FROM cells GROUP BY ALL HAVING count(*) > 1)
SELECT EXISTS (
    SELECT 1 FROM measured JOIN shared USING (task, method, model, pretrained, attack)
    GROUP BY task, sample_id, method, model, pretrained, attack HAVING count(DISTINCT run_id) > 1)
"""
"""Whether a (task, sample, method, teacher, attack) appears in two runs: the same sample measured twice
(a clean run and its attacked twin measure different things). Only cells that two runs share are
looked at sample by sample, so disjoint runs cost one small query."""


def newest_run_with_rows(root: Path) -> tuple[Path, int, tuple[str, ...]]:
    """The newest run under `root` (by start time) that has at least one finished shard, how many
    newer runs had none, and a note for each run that could not be read (skipped, not fatal)."""
    found, unreadable = [], []
    for path in root.glob(f"*/{rundir.MANIFEST}"):
        try:
            found.append((rundir.read_manifest(path.parent).get("started") or "", path.parent.name, path.parent))
        except HarnessError as exc:
            unreadable.append(f"Skipped a run that cannot be read: {exc}")
    if not found:
        raise HarnessError(f"no runs under {root}/ (run `apm-bench run` first, or name a run directory)"
                           + (f"; {len(unreadable)} unreadable" if unreadable else ""))
    runs = [run_dir for _, _, run_dir in sorted(found, key=lambda f: (str(f[0]), f[1]), reverse=True)]
    for skipped, run_dir in enumerate(runs):
        if resultfiles.row_files(run_dir):
            return run_dir, skipped, tuple(unreadable)
    raise HarnessError(f"no run under {root}/ has a finished shard yet ({len(runs)} run(s) without any)")


def _unverified(run_dir: Path, verdict: resultfiles.Verdict, allow_incomplete: bool) -> str:
    first, reason = verdict.bad[0]
    more = f" (and {len(verdict.bad) - 1} more file(s))" if len(verdict.bad) > 1 else ""
    if not allow_incomplete:
        raise HarnessError(f"{first}: {reason}{more}; repair it with: apm-bench run --resume {run_dir} "
                           "(or report the rest with --allow-incomplete)")
    listed = "; ".join(f"{p.relative_to(run_dir)}: {r}" for p, r in verdict.bad)
    return (f"INCOMPLETE: {run_dir} has {len(verdict.bad)} result file(s) that failed verification, left out of "
            f"these tables ({listed}); repair with: apm-bench run --resume {run_dir}")


def _orders(manifests: list[dict], runs: list[str]) -> Orders:
    """Tasks, methods and teachers in the order the runs' configs list them."""
    configs = [m.get("config") or {} for m in manifests]
    tasks = [t for c in configs for t in c.get("tasks", ())]
    methods = [m for c in configs for m in c.get("methods", ())]
    teachers = [(c["teacher"]["model"], c["teacher"]["pretrained"]) for c in configs if "teacher" in c]
    return Orders(tuple(runs), tuple(dict.fromkeys(tasks)), tuple(dict.fromkeys(methods)),
                  tuple(dict.fromkeys(teachers)))


def _run_read(run_dir: Path, manifest: dict, verdict: resultfiles.Verdict, stats: pd.DataFrame) -> RunRead:
    tasks = (manifest.get("config") or {}).get("tasks") or ()
    streams = bool(manifest.get("streams_total"))  # every sample has rows long before every stream has: only its end says
    return RunRead(run_dir, int(stats["n"].sum()), int(stats["samples"].sum()),
                   None if streams else manifest.get("samples_total"), len(verdict.shards),
                   None if streams else manifest.get("shards_total"), len(manifest.get("failed_shards") or {}),
                   manifest.get("finished"), tuple(sorted({str(i) for ids in stats["ids"] for i in ids})),
                   tuple((str(t), int(k)) for t, k in zip(stats["task"], stats["samples"])),
                   tuple(dict.fromkeys(str(t) for t in tasks)))


def read_report_input(run_dirs: list[Path] | None, root: Path, allow_incomplete: bool = False) -> ReportInput:
    """The rows of `run_dirs` (default: the newest run with rows under `root`), every result file
    verified first (harness.resultfiles.verify): a file that fails stops the report with one line naming it
    and the repair, unless `allow_incomplete`, which reports the rest and says so in the notes."""
    notes = []
    if not run_dirs:
        newest, skipped, unreadable = newest_run_with_rows(root)
        run_dirs = [newest]
        notes += unreadable
        if skipped:
            notes.append(f"Skipped {skipped} newer run(s) under {root}/ without any finished shard.")
    reads, manifests, files = [], [], []
    for run_dir in run_dirs:
        manifest = rundir.read_manifest(run_dir)
        verdict = resultfiles.verify(run_dir, manifest.get("fingerprint"))
        if verdict.bad:
            notes.append(_unverified(run_dir, verdict, allow_incomplete))
        found = [str(p) for p in verdict.files]
        if not found:
            notes.append(f"Skipped {run_dir}: no finished shard yet.")
            continue
        reads.append(_run_read(run_dir, manifest, verdict, RowSet.from_files(found).query(RUN_STATS_SQL)))
        manifests.append(manifest)
        files += found
    if not reads:
        raise HarnessError(f"no rows to report: {', '.join(map(str, run_dirs))} ha{'s' if len(run_dirs) == 1 else 've'} "
                           "no finished shard yet")
    kept = [r.run_dir for r in reads]
    run_ids = [str(m.get("run_id") or d.name) for m, d in zip(manifests, kept)]
    pooled = RowSet.from_files(files)
    notes.insert(0, "Read: " + "; ".join(r.describe() for r in reads) + ".")
    overlap = len(kept) > 1 and bool(pooled.query(OVERLAP_SQL).iloc[0, 0])
    if overlap:
        notes.append("These runs measured some of the same samples, so they are not pooled: each run has its own "
                     "rows, labelled by run id.")
    elif len(kept) > 1:
        notes.append("These runs share no sample, method, teacher and attack, so their rows are pooled.")
    rows = RowSet.from_files(files, run_labels=overlap, orders=_orders(manifests, run_ids if overlap else [""]))
    return ReportInput(rows, tuple(reads), tuple(notes))
