"""Machine-readable and printable output (issue #23, 4): CSV and JSON carry the run ids a cell was
computed from, its interval, n, errors and whether its runs finished; LaTeX escapes every heading and
fits Table 2's 19 columns on a page; markdown stays under about 160 characters a line."""

import dataclasses
import io
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from harness import resultfiles
from harness.report.render import render, render_table
from harness.report.tables import CORRUPTIONS
from test_report_tables import make_row
from test_report_unfinished import _run, report

WIDTH = 160


def split_runs(tmp_path):
    """One benchmark in two runs with no sample in common (pooled): zero-shot's imagenet cell is made of
    both runs' rows; an error row in run-b."""
    a = [dataclasses.replace(make_row("imagenet", m, i, i % 3 != 0), run_id="run-a") for m in ("zeroshot", "apm")
         for i in range(0, 6)]
    b = [dataclasses.replace(make_row("imagenet", m, i, i % 2 == 0), run_id="run-b") for m in ("zeroshot", "apm")
         for i in range(6, 12)]
    b += [dataclasses.replace(make_row("imagenet", "apm", 12, None, error="cannot decode"), run_id="run-b")]
    return [_run(tmp_path, "run-a", a, samples_total=6), _run(tmp_path, "run-b", b, samples_total=7)]


def test_plain_csv_and_json_carry_runs_intervals_n_errors_and_finished(tmp_path):
    runs = split_runs(tmp_path)
    for fmt in ("csv", "json"):
        text = report(runs, "--format", fmt)
        found = pd.read_csv(io.StringIO(text)) if fmt == "csv" else pd.DataFrame(json.loads(text))
        apm = found.set_index("method").loc["apm"]
        assert apm["run"] == "run-a;run-b"  # pooled: every run the cell's rows come from
        assert (apm["n"], apm["errors"]) == (12, 1) and bool(apm["finished"]) is True
        assert apm["accuracy_low"] <= apm["accuracy"] <= apm["accuracy_high"] and apm["accuracy_low"] < apm["accuracy_high"]
        assert {"top5_accuracy_low", "top5_accuracy_high", "missing", "status"} <= set(found.columns)


def test_paper_csv_and_json_carry_the_same(tmp_path):
    runs = split_runs(tmp_path)
    found = pd.read_csv(io.StringIO(report(runs, "--format", "csv", "--table", "natural-shift", "--no-reference")))
    cell = found[(found["kind"] == "measured") & (found["method"] == "apm") & (found["column"] == "imagenet")].iloc[0]
    assert cell["run"] == "run-a;run-b" and (cell["n"], cell["errors"]) == (12, 1) and bool(cell["finished"])
    assert cell["low"] < cell["value"] < cell["high"]
    doc = json.loads(report(runs, "--format", "json", "--table", "natural-shift", "--no-reference"))
    cells = [c for c in doc["cells"] if c["kind"] == "measured" and c["column"] == "imagenet"]
    assert {c["run"] for c in cells} == {"run-a;run-b"} and all(c["finished"] is True for c in cells)


def unescaped_percent(text: str) -> list[str]:
    """Lines where a `%` starts a LaTeX comment that is not the whole line."""
    return [line for line in text.splitlines() if re.search(r"(?<!\\)%", line) and not line.startswith("%")
            and not line.rstrip().endswith("{%")]  # `\resizebox{...}{!}{%`: the usual end-of-line comment


def test_latex_escapes_headings_and_notes(tmp_path):
    frame = resultfiles.read_rows([_run(tmp_path, "run", [make_row(f"t_{k}%&#", "zeroshot", i, True)
                                                          for k in range(2) for i in range(3)])])
    plain = render(frame, "latex")
    assert r"\caption{Top-1 accuracy (\%)}" in plain and "Top-1 accuracy (%)" not in plain
    assert r"t\_0\%\&\#" in plain and not unescaped_percent(plain)
    paper = render_table(frame.assign(task="imagenet"), "natural-shift", "latex", read_notes=("a note with 50% & $x_1$",))
    assert r"a note with 50\% \& \$x\_1\$" in paper and not unescaped_percent(paper)


def table_2(tmp_path, samples=4):
    rows = [make_row(f"imagenet-c/{c}/5", m, i, (i + k) % 3 != 0, model="ViT-L-14")
            for m in ("zeroshot", "tpt", "apm") for k, c in enumerate(CORRUPTIONS) for i in range(samples)]
    return resultfiles.read_rows([_run(tmp_path, "t2", rows)])


def test_table_2_latex_fits_the_page(tmp_path):
    text = render_table(table_2(tmp_path), "imagenet-c", "latex")
    assert text.startswith(r"% apm-bench report: needs \usepackage{booktabs,graphicx}")
    first = text.split(r"\end{table}")[0]
    tabulars = re.findall(r"\\begin\{tabular\}\{(\w+)\}\n\\toprule\n(.*?) \\\\", first)
    assert len(tabulars) == 2 and all(len(spec) <= 12 for spec, _ in tabulars)  # 8 corruptions each, at print size
    headers = [h for _, line in tabulars for h in line.split(" & ")[2:]]
    assert len(headers) == 16 and headers[-1] == "Average" and "gauss" in headers  # short headers ...
    assert "gauss = imagenet-c/gaussian\\_noise/5" in first  # ... and their legend
    assert first.count(r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%") == 2
    assert text.count("{") == text.count("}") and not unescaped_percent(text)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed (the structural test above runs)")
def test_table_2_latex_compiles_within_the_text_width(tmp_path):
    body = render_table(table_2(tmp_path, samples=50), "imagenet-c", "latex")
    doc = (r"\documentclass{article}\usepackage{booktabs,graphicx}\usepackage[margin=1in]{geometry}"
           "\n\\begin{document}\n" + body + "\n\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Overfull \\hbox" not in (tmp_path / "t.log").read_text()


@pytest.mark.parametrize("table", ["imagenet-c", "fashion-mnist-c"])
def test_wide_markdown_stays_under_160_characters(tmp_path, table):
    frame = table_2(tmp_path)
    if table == "fashion-mnist-c":
        frame = frame.assign(task=frame["task"].str.replace("imagenet-c/", "fashion-mnist-c/"))
    text = render_table(frame, table, "markdown")  # with the paper's rows beside ours where it has them
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert f"gauss = {table}/gaussian_noise/5" in text and "| gauss " in text
    assert text.count("Columns 1-") >= 2  # the accuracy and paired tables, each in parts
