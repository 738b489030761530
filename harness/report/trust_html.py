"""The trust tables (harness.report.trust_text) as HTML grids: each value large, its
interval on the line below, what each column means on hover."""

from __future__ import annotations

from harness.report.htmltable import Column, Entry, Grid, Record
from harness.report.tables import teacher_label
from harness.report.trust import TrustReport
from harness.report.trust_text import ACCURACY_COLUMNS, OOD_COLUMNS, STABILITY_TITLE, TITLE, shown_legend, tables


ANCHORS = {TITLE: "trust", STABILITY_TITLE: "stability"}


def grids(report: TrustReport) -> list[Grid]:
    """The tables as HTML grids: value large, interval (or worst run) below, what each column means on hover."""
    meaning = {c[1]: c[2] for c in ACCURACY_COLUMNS + OOD_COLUMNS}
    out = []
    for title, headers, body, notes in tables(report):
        if not body:
            continue
        keys = report.stability if title == STABILITY_TITLE else report.lines
        teachers = [teacher_label(k.model, k.pretrained) for k in keys]
        shown = [i for i, h in enumerate(headers) if h != "teacher"]  # the teacher heads its group instead
        cols = tuple(Column(headers[i], meaning.get(headers[i], headers[i])) for i in shown[1:])
        records = tuple(Record(line[0][0], tuple(Entry(line[i][0], " ".join(line[i][1:])) for i in shown[1:]),
                               group=teacher, kind="measured") for line, teacher in zip(body, teachers))
        legend = (shown_legend(report),) if title == TITLE else ()
        out.append(Grid(ANCHORS.get(title, "ood"), title, cols, records, best=None, notes=(*notes, *legend)))
    return out


def empty_notes(report: TrustReport) -> tuple[str, ...]:
    """The notes of the tables that have no column to show (what would fill them)."""
    return tuple(note for _, _, body, notes in tables(report) if not body for note in notes)
