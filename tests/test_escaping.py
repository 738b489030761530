"""Names and paths hold anything: in markdown a `|`, a line break or `<script>` stays inside its cell as
text, and on the terminal an ANSI escape is shown, never obeyed."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from test_report_tables import make_row, write_run
from typer.testing import CliRunner

from harness.report.inputs import read_report_input
from harness.report.render import render, render_table
from harness.text import markdown_cell, terminal_safe

EVIL = "a|b\nc\r<script>alert(1)</script>&"
ESC = "\x1b[31m"
EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")


def tables(text: str) -> list[list[str]]:
    """The markdown tables of `text`, each as its lines."""
    return [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]


def cell_counts(table: list[str]) -> set[int]:
    return {len(re.findall(r"(?<!\\)\|", line)) for line in table}


def rows_of(tmp_path: Path, rows: list, name: str = "run"):
    return read_report_input([write_run(tmp_path, rows, name)], tmp_path).rows


def test_the_escapes():
    assert markdown_cell(EVIL) == "a\\|b\\nc\\r&lt;script&gt;alert(1)&lt;/script&gt;&amp;"
    assert terminal_safe(f"{ESC}red\x07\x9b\x7f\ttab\nline") == "\\x1b[31mred\\x07\\x9b\\x7f\ttab\nline"


def test_markdown_pivot_keeps_one_line_per_row_and_no_html(tmp_path):
    rows = [make_row(EVIL, "zeroshot", i, i % 2 == 0) for i in range(3)]
    rows += [make_row("imagenet", "my|method\n<b>", i, True, pretrained="p|q\n<i>") for i in range(3)]
    text = render(rows_of(tmp_path, rows), "markdown")
    assert "<script>" not in text and "<b>" not in text and "<i>" not in text
    assert "a\\|b\\nc\\r&lt;script&gt;" in text and "my\\|method\\n&lt;b&gt;" in text
    found = tables(text)
    assert len(found) == 3  # top-1, top-5, per-class recall
    for table in found:
        assert len(table) == 4, table  # header, rule, one line per method
        assert len(cell_counts(table)) == 1, table  # no cell split by a `|` of a name


def test_paper_markdown_escapes_cells_and_notes(tmp_path):
    teacher = "ViT|B\n<img>"
    rows = [make_row("imagenet", m, i, i % 2 == 0, model=teacher) for m in ("zeroshot", EVIL) for i in range(4)]
    rows += [make_row("imagenet", EVIL, 9, None, error="cannot decode", model=teacher)]  # the error tally: a note
    rows += [make_row(f"out{EVIL}", "zeroshot", i, True, model=teacher) for i in range(2)]  # outside the table: a note
    text = render_table(rows_of(tmp_path, rows), "natural-shift", "markdown", reference=False)
    assert "<script>" not in text and "<img>" not in text
    sections = text.split("\n#### ")
    assert len(sections) == 3  # accuracy, paired differences, cost: each table maybe in parts (wide names)
    for section, lines in zip(sections, (4, 3, 4)):  # header, rule, one line per method (zero-shot and EVIL)
        found = tables(section)
        assert found and all(len(table) == lines for table in found), found
        for table in found:
            assert len(cell_counts(table)) == 1, table  # no cell split by a `|` of a name
    notes = [block for block in text.split("\n\n") if block.startswith("- ")]
    assert notes and all(line.startswith(("- ", "  ")) for block in notes for line in block.splitlines())
    assert any("out" + markdown_cell(EVIL) in block for block in notes)


def test_html_and_latex_already_escape(tmp_path):
    rows = rows_of(tmp_path, [make_row("imagenet", m, i, True) for m in ("zeroshot", EVIL) for i in range(2)]
                   + [make_row(f"x{EVIL}_%", "zeroshot", 0, True)])
    for page in (render(rows, "html"), render_table(rows, "natural-shift", "html", reference=False)):
        assert "<script>" not in page and "&lt;script&gt;" in page
    for doc in (render(rows, "latex"), render_table(rows, "natural-shift", "latex", reference=False)):
        assert "\\&" in doc and "\\_\\%" in doc


def test_a_path_with_an_ansi_escape_is_shown_escaped_in_the_error_line(tmp_path):
    done = subprocess.run([EXE, "report", str(tmp_path / f"{ESC}red")], cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode != 0
    assert "\x1b" not in done.stderr + done.stdout
    assert done.stderr.startswith("error: ") and "\\x1b[31mred" in done.stderr, done.stderr


def test_command_output_shows_escapes_in_names_and_paths(tmp_path):
    import cli

    run_dir = write_run(tmp_path, [make_row(f"t{ESC}\x1b]0;owned\x07", "zeroshot", i, True) for i in range(2)],
                        f"{ESC}run")
    done = CliRunner().invoke(cli.app, ["report", str(run_dir)])
    assert done.exit_code == 0, done.output
    assert "\x1b" not in done.output and "\x07" not in done.output
    assert "t\\x1b[31m\\x1b]0;owned\\x07" in done.output
    listed = CliRunner().invoke(cli.app, ["ls", "tasks", "--data-root", str(tmp_path / f"{ESC}data")])
    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output and "\\x1b[31mdata):" in listed.output
