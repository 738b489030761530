"""The same cell, the same interval (issue #23, 3): a bootstrap interval is seeded from what the cell
holds (task, method, teacher, its sample ids) and `--seed`, so the same rows get the same interval in
the plain pivot and under `--table`, in two runs with other run ids, and in any row order."""

import dataclasses
import random
import re

import duckdb

from harness import resultfiles
from harness.report.inputs import read_report_input
from harness.report.render import render, render_table
from test_report_tables import make_row
from test_report_unfinished import _run

TASKS = ("imagenet", "imagenet-a", "imagenet-v2", "imagenet-r", "imagenet-sketch")
LABELS = {"zeroshot": "CLIP", "apm": "APM"}


def rows(run_id="r", samples=30):
    """Outcomes that differ by method and task, with enough samples that intervals differ by seed."""
    return [dataclasses.replace(make_row(t, m, i, (i * (k + 2) + (m == "apm")) % 3 != 0), run_id=run_id)
            for k, t in enumerate(TASKS) for m in ("zeroshot", "apm") for i in range(samples)]


def table_cells(text: str) -> dict[str, list[str]]:
    """label -> its cells, from the first section of a markdown report whose table may be in parts
    (consecutive columns): joined by label."""
    section = re.split(r"\n(?:Top-5|#### )", text)[0]
    out: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| method ", "| Method ")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            first = 2 if cells[1].startswith("ViT") else 1  # paper layouts have a Teacher column
            out.setdefault(cells[0], []).extend(cells[first:])
    return out


def without_n(cell: str) -> str:
    return re.sub(r" \(n=\d+\)$", "", cell)


def test_plain_and_table_give_a_cell_the_same_interval(tmp_path):
    frame = resultfiles.read_rows([_run(tmp_path, "run", rows())])
    plain = table_cells(render(frame, "markdown"))
    paper = table_cells(render_table(frame, "natural-shift", "markdown", reference=False))
    for method, label in LABELS.items():
        assert plain[method][:5] == paper[label][:5]  # every task column, interval and n alike
        assert without_n(plain[method][5]) == without_n(paper[label][5])  # the Average (plain has no n there)
        assert all("[" in c for c in plain[method][:6])


def test_two_runs_with_the_same_rows_get_the_same_intervals(tmp_path):
    a = _run(tmp_path, "run-a", rows("run-a"))
    b = _run(tmp_path, "run-b", list(reversed(rows("run-b"))))  # the same rows, another order and run id
    read = read_report_input([a, b], tmp_path)  # the same samples: side by side, labelled by run
    for text in (render(read.rows, "markdown"), render_table(read.rows, "natural-shift", "markdown", reference=False)):
        found = table_cells(text)
        for label in (*LABELS, *LABELS.values()):
            if f"{label} [run-a]" in found:
                assert found[f"{label} [run-a]"] == found[f"{label} [run-b]"], label
    one = table_cells(render_table(resultfiles.read_rows([a]), "natural-shift", "markdown", reference=False))
    assert one["APM"] == found["APM [run-a]"]  # alone or beside another run: the same cell


def test_intervals_depend_on_the_seed(tmp_path):
    frame = resultfiles.read_rows([_run(tmp_path, "run", rows())])
    assert render(frame, "markdown", seed=0) == render(frame, "markdown", seed=0)
    assert render(frame, "markdown", seed=0) != render(frame, "markdown", seed=1)


def test_the_digest_in_sql_is_its_python_definition():
    from harness.report.digest import digest_sql, python_digest

    ids = ["s0", "c0001/img_0000001.JPEG", "é/ü", "dup", "dup", *(f"x{i}" for i in range(500))]
    random.Random(0).shuffle(ids)
    con = duckdb.connect()
    con.execute("CREATE TABLE rows AS SELECT unnest(?::VARCHAR[]) AS sample_id", [ids])
    assert con.execute(f"SELECT {digest_sql()} FROM rows").fetchone()[0] == python_digest(ids)
    assert con.execute(f"SELECT {digest_sql('false')} FROM rows").fetchone()[0] == 0 == python_digest([])
    assert python_digest(ids) == python_digest(sorted(ids)) != python_digest(ids[1:])
