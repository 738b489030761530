"""Fill one of the paper's table layouts from the rows of one or more runs: measured cells with n and
bootstrap intervals, the paper's rows beside ours with the difference per cell, averages computed from
the cells, paired differences against zero-shot, and cost. The result is plain data; render_paper.py
turns it into text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.accuracy import cells
from harness.report.cost import CostLine, cost_lines, cost_notes
from harness.report.paired import KEYS as PAIR_KEYS
from harness.report.paired import cell_pairing, paired_tallies, unpaired_note
from harness.report.progress import NO_PROGRESS, CellProgress, Progress
from harness.report.rowset import RowSet, as_rowset
from harness.report.streams import StreamStats, stream_stats
from harness.report.stats import RESAMPLES, Estimate, cell_key, estimate_counts, mean_of
from harness.report.tables import (
    BASELINE, ReferenceRow, TableSpec, load_reference, method_label, paper_labels, teacher_label,
)
from harness.report.values import Cell

STATED_TOLERANCE = 0.1
"""Points by which a stated average may differ from the mean of its printed columns through rounding
alone (each column is rounded to 0.05 at most, and so is the stated value)."""

LineKey = tuple[str, str, str, str]
"""(method, model, pretrained, run): one measured row of a table; run is "" where runs are pooled."""


@dataclass(frozen=True)
class Line:
    kind: str
    """measured, paper, vs-paper (ours minus the paper's) or paired (method minus zero-shot)."""
    label: str
    """What the Method column shows."""
    teacher: str
    method: str
    """Our method name; the paper's own label on paper rows."""
    model: str
    pretrained: str
    cells: tuple[Cell, ...]
    """One per `spec.keys`: the task columns, then the summaries."""
    run: str = ""
    """The run id where runs are shown side by side (harness.report.inputs); "" where pooled."""


@dataclass(frozen=True)
class PaperReport:
    spec: TableSpec
    lines: tuple[Line, ...]
    paired: tuple[Line, ...]
    cost: tuple[CostLine, ...]
    notes: tuple[str, ...]
    """Printed under the main table."""
    paired_notes: tuple[str, ...]
    cost_notes: tuple[str, ...]
    seed: int
    resamples: int
    unfinished: tuple[str, ...] = ()
    """One marker per unfinished run read (harness.report.progress), printed in the body of every format."""
    streams: tuple[StreamStats, ...] = ()
    """The online methods' accuracy per stream on the layout's tasks, with mean, spread and tail."""


def _marks(state: CellProgress, runs: tuple[str, ...]) -> dict:
    return dict(runs=runs, finished=state.finished, missing=state.missing, status=state.status)


def _cell(est: Estimate | None, state: CellProgress, runs: tuple[str, ...] = (), errors: int = 0,
          unpaired: int = 0) -> Cell:
    if est is None or est.value is None:
        return Cell(None, errors=errors, unpaired=unpaired, **_marks(state, runs))
    return Cell(est.value, est.low, est.high, est.n, errors, unpaired, **_marks(state, runs))


def _summaries(spec: TableSpec, estimates: dict[str, Estimate], cells: dict[str, Cell]) -> list[Cell]:
    """Each summary column: blank unless every column it averages has data and is complete."""
    out = []
    for summary in spec.summaries:
        parts = [estimates[t] for t in summary.tasks]
        state = Progress.combine(cells[t] for t in summary.tasks)
        marks = _marks(state, tuple(sorted({r for t in summary.tasks for r in cells[t].runs})))
        mean = mean_of(parts)
        present = sum(p.value is not None for p in parts)
        if not state.complete:
            out.append(Cell(None, note="not finished", **marks))
        elif mean is None:
            out.append(Cell(None, note=f"{present}/{len(parts)} tasks" if present else "", **marks))
        else:
            out.append(Cell(mean.value, mean.low, mean.high, mean.n, **marks))
    return out


def cell_state(progress: Progress, by_cell: dict, group: LineKey, task: str) -> CellProgress:
    """How complete the cell of `group` x `task` is: from the runs of its rows, or (no rows) the
    line's run, or every run read where runs are pooled."""
    row = by_cell.get((*group, task))
    run = group[3]
    return progress.cell(task, row.runs if row is not None else ((run,) if run else ()))


def run_label(label: str, run: str) -> str:
    return f"{label} [{run}]" if run else label


def count_estimate(trials: int, hits: int, key: str, seed: int, resamples: int) -> Estimate:
    """Accuracy of `hits` out of `trials` with its bootstrap interval: the same draws as resampling
    the 0/1 outcomes themselves."""
    return estimate_counts(np.array([0.0, 1.0]), np.array([trials - hits, hits]), key, seed, resamples)


def line_keys(long: pd.DataFrame) -> list[LineKey]:
    """Every (method, model, pretrained, run) of the rows, in the order `accuracy.cells` sorts them:
    teachers in the runs' order, then the paper's method order, then runs."""
    return list(dict.fromkeys(zip(long["method"], long["model"], long["pretrained"], long["run"])))


def measured_line(spec: TableSpec, group: LineKey, by_cell: dict, seed: int, resamples: int,
                  progress: Progress = NO_PROGRESS) -> Line:
    """Top-1 per column, each interval seeded from the cell's content (stats.cell_key), so it equals
    the plain pivot's for the same rows."""
    method, model, pretrained, run = group
    estimates, cells = {}, {}
    for task in spec.tasks:
        counts = by_cell.get((*group, task))
        state = cell_state(progress, by_cell, group, task)
        if counts is None:
            estimates[task] = Estimate(None, None, None, 0)
            cells[task] = _cell(None, state)
            continue
        key = cell_key("top1", task, method, model, pretrained, int(counts.ids))
        est = count_estimate(int(counts.n), int(counts.correct), key, seed, resamples)
        estimates[task] = est
        cells[task] = _cell(est, state, tuple(counts.runs), errors=int(counts.errors))
    return Line("measured", run_label(method_label(method), run), teacher_label(model, pretrained), method, model,
                pretrained, tuple([*cells.values(), *_summaries(spec, estimates, cells)]), run)


def paper_line(spec: TableSpec, ref: ReferenceRow) -> tuple[Line, list[str]]:
    """The paper's row with its averages recomputed; a note for each stated average that disagrees."""
    cells = [Cell(ref.values[c.header]) for c in spec.columns]
    header_of = {c.task: c.header for c in spec.columns}
    notes = []
    for summary in spec.summaries:
        mean = float(np.mean([ref.values[header_of[t]] for t in summary.tasks]))
        stated = ref.stated.get(summary.key)
        differs = stated is not None and abs(mean - stated) > STATED_TOLERANCE + 1e-9
        cells.append(Cell(mean, stated=stated if differs else None))
        if differs:
            notes.append(
                f"{ref.method} {ref.teacher}: the paper states {summary.header} {stated:.1f}, but its own columns "
                f"average {mean:.2f} (more than rounding explains); the {summary.header} shown is the mean."
            )
    label = f"{ref.method} [paper]" + (" (ImageNet train)" if ref.uses_imagenet_train else "")
    return Line("paper", label, ref.teacher, ref.method, "", "", tuple(cells)), notes


def difference_line(ours: Line, paper: Line) -> Line:
    cells = tuple(
        Cell(a.value - b.value if a.value is not None and b.value is not None else None, runs=a.runs,
             finished=a.finished, missing=a.missing, status=a.status)
        for a, b in zip(ours.cells, paper.cells)
    )
    return Line("vs-paper", f"{ours.label} [ours - paper]", ours.teacher, ours.method, ours.model, ours.pretrained, cells,
                ours.run)


def paired_lines(spec: TableSpec, groups: list[LineKey], rowset: RowSet, seed: int, resamples: int,
                 by_measured: dict | None = None, progress: Progress = NO_PROGRESS) -> tuple[list[Line], list[str]]:
    """Each method against zero-shot of the same teacher and the same run, on the same sample ids;
    each interval seeded from the digests of the two cells' sample ids (`by_measured`: the counts
    per (method, model, pretrained, run, task), from `accuracy.cells`)."""
    by_measured = by_measured or {}
    pairs, samples = paired_tallies(rowset, spec)
    by_cell = {key: part for key, part in pairs.groupby(PAIR_KEYS, sort=False)} if len(pairs) else {}
    counts = {tuple(r[:5]): int(r[5]) for r in samples[[*PAIR_KEYS, "samples"]].itertuples(index=False)}
    lines, notes, unpaired = [], [], []
    for method, model, pretrained, run in groups:
        if method == BASELINE:
            continue
        teacher = teacher_label(model, pretrained)
        if (BASELINE, model, pretrained, run) not in groups:
            notes.append(f"{run_label(method_label(method), run)} {teacher}: no {BASELINE} rows with this teacher"
                         + (" in this run" if run else "") + ", nothing pairs.")
        estimates, cells = {}, {}
        base_group = (BASELINE, model, pretrained, run)
        for task in spec.tasks:
            ours, base = by_measured.get((method, model, pretrained, run, task)), by_measured.get((*base_group, task))
            key = cell_key("paired", task, method, model, pretrained, *(int(c.ids) if c is not None else 0
                                                                         for c in (ours, base)))
            cell = (run, method, model, pretrained, task)
            est, only_method, only_base = cell_pairing(by_cell, counts, cell, key, seed, resamples)
            estimates[task] = est
            state = Progress.combine([cell_state(progress, by_measured, (method, model, pretrained, run), task),
                                      cell_state(progress, by_measured, base_group, task)])
            runs = tuple(sorted({r for c in (ours, base) if c is not None for r in c.runs}))
            cells[task] = _cell(est, state, runs, unpaired=only_method + only_base)
            if only_method + only_base:
                unpaired.append(unpaired_note(method, model, pretrained, task, only_method, only_base))
        lines.append(Line("paired", run_label(f"{method_label(method)} - {method_label(BASELINE)}", run), teacher, method,
                          model, pretrained, tuple([*cells.values(), *_summaries(spec, estimates, cells)]), run))
    if unpaired:
        notes.append(f"Sample ids that did not pair (left out of the differences): {'; '.join(unpaired)}.")
    return lines, notes


def build_report(
    rows: RowSet | pd.DataFrame, spec: TableSpec, reference: bool = True, seed: int = 0, resamples: int = RESAMPLES,
    read_notes: tuple[str, ...] = (), progress: Progress = NO_PROGRESS,
) -> PaperReport:
    """`rows`: the runs' rows (a RowSet over their files, or a DataFrame with a `run` column where runs
    are side by side). Every method x teacher (x run) in them gets a line, with n = 0 marks where it has
    no data for a column, so a missing run is visible, not silently absent. `read_notes` say what was
    read, `progress` how far each run got. Only aggregates leave the query engine: counts per cell
    and per paired difference."""
    rowset = as_rowset(rows)
    long = cells(rowset, recall=False)
    inside = long[long["task"].isin(spec.tasks)]
    if inside.empty:
        present = ", ".join(dict.fromkeys(long["task"])) or "none"
        raise HarnessError(f"--table {spec.name}: none of its tasks ({', '.join(spec.tasks[:3])}, ...) is in the rows "
                           f"read (their tasks: {present})")
    by_cell = {(r.method, r.model, r.pretrained, r.run, r.task): r for r in inside.itertuples()}
    groups = line_keys(long)
    refs = list(load_reference(spec)) if reference else []
    lines: list[Line] = []
    notes = ["Cells: top-1 accuracy % [95% percentile bootstrap interval] (n scored samples); "
             "'- (n=0)' marks a cell with no data. Averages are unweighted means of the columns, "
             "computed here (never copied), and blank unless every column has data and all its samples."]
    paper_notes: list[str] = []
    for group in groups:
        ours = measured_line(spec, group, by_cell, seed, resamples, progress)
        lines.append(ours)
        match = next((r for r in refs if r.teacher == ours.teacher and r.method in paper_labels(group[0])), None)
        if match is not None:
            refs.remove(match)
            paper, found = paper_line(spec, match)
            lines += [paper, difference_line(ours, paper)]
            paper_notes += found
    for ref in refs:  # the paper's rows we did not measure, for context
        paper, found = paper_line(spec, ref)
        lines.append(paper)
        paper_notes += found
    notes += paper_notes + list(read_notes)
    errors = inside[inside["errors"] > 0]
    if len(errors):
        tally = "; ".join(f"{method_label(r.method)} {teacher_label(r.model, r.pretrained)} {r.task}: {r.errors}"
                          for r in errors.itertuples())
        notes.append(f"Error rows excluded from scoring ({int(errors['errors'].sum())}): {tally}.")
    outside = long[~long["task"].isin(spec.tasks)]
    if len(outside):
        others = ", ".join(dict.fromkeys(outside["task"]))
        notes.append(f"Rows of tasks outside this table, not shown ({int((outside['n'] + outside['errors']).sum())}): "
                     f"{others}.")
    paired, paired_notes = paired_lines(spec, groups, rowset, seed, resamples, by_cell, progress)
    cost = cost_lines(rowset, groups, spec.tasks)
    streams = tuple(s for s in stream_stats(rowset) if s.task in spec.tasks)
    return PaperReport(spec, tuple(lines), tuple(paired), tuple(cost), tuple(notes), tuple(paired_notes),
                       tuple(cost_notes(rowset, spec.tasks)), seed, resamples, progress.markers(), streams)


def flatten(lines: Iterable[Line], spec: TableSpec) -> list[dict]:
    """Long form: one record per cell, for csv and json. `run` is the run ids the cell was computed
    from, `;`-joined where runs are pooled ("" for the paper's own numbers); `finished`, `missing` and
    `status` say whether they have all of the cell's samples (blank where not applicable)."""
    out = []
    for line in lines:
        for key, header, cell in zip(spec.keys, spec.headers, line.cells):
            out.append({
                "table": spec.name, "kind": line.kind, "label": line.label, "teacher": line.teacher,
                "method": line.method, "model": line.model, "pretrained": line.pretrained, "run": ";".join(cell.runs),
                "column": key, "header": header, "value": cell.value, "low": cell.low, "high": cell.high,
                "n": cell.n, "errors": cell.errors, "unpaired": cell.unpaired, "stated": cell.stated, "note": cell.note,
                "finished": cell.finished, "missing": cell.missing, "status": cell.status,
            })
    return out
