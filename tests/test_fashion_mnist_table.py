"""`--table fashion-mnist-c`: Table 2's layout on the offline shift benchmark (clean column first, the 15
corruptions at severity 5 alphabetically, an Average over the corruptions only) and no paper rows."""

import numpy as np

from harness import resultfiles
from harness.report.render import render_table
from harness.report.tables import CORRUPTIONS, SHORT, TABLES, load_reference
from test_report_tables import make_row, write_run

TEACHER = {"model": "apm-mini", "pretrained": "fashion-teacher"}


def outcomes(method: str, column: int) -> list[bool]:
    """Column 0 is clean; a different, known pattern per method and column."""
    shift = 1 if method == "apm" else 0
    return [(i * (column + 1) + shift) % 3 != 0 for i in range(6)]


def table_rows(tmp_path):
    tasks = ["fashion-mnist"] + [f"fashion-mnist-c/{c}/5" for c in CORRUPTIONS]
    rows = [make_row(task, method, i, hit, **TEACHER)
            for method in ("zeroshot", "apm") for k, task in enumerate(tasks) for i, hit in enumerate(outcomes(method, k))]
    return resultfiles.read_rows([write_run(tmp_path, rows)])


def markdown_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Headers and label -> cells of the first (accuracy) table of a markdown report, whose parts
    (consecutive columns, each under 160 characters) are joined again here."""
    section = text.split("\n- ")[0]
    headers: list[str] = []
    body: dict[str, list[str]] = {}
    for block in (b for b in section.split("\n\n") if b.startswith("|")):
        lines = [line for line in block.splitlines() if not line.startswith("|--")]
        split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        headers += split[0] if not headers else split[0][2:]
        for cells in split[1:]:
            body.setdefault(cells[0], []).extend(cells[2:])
    return headers, body


def test_spec_is_the_suite_and_has_no_reference():
    from tasks.fashion_mnist import FASHION_MNIST_C
    from tasks.registry import SUITES

    spec = TABLES.get("fashion-mnist-c")
    assert spec.tasks == ("fashion-mnist",) + FASHION_MNIST_C == SUITES.get("fashion-mnist-c").tasks[:16]  # + open set
    assert [c.header for c in spec.columns] == ["clean", *CORRUPTIONS] and list(CORRUPTIONS) == sorted(CORRUPTIONS)
    assert spec.summaries[0].tasks == FASHION_MNIST_C  # the clean set is not averaged in
    assert spec.reference is None and load_reference(spec) == ()


def test_rows_fill_the_layout_and_no_paper_row_is_shown(tmp_path):
    text = render_table(table_rows(tmp_path), "fashion-mnist-c", "markdown")  # reference on, as by default
    headers, body = markdown_table(text)
    assert headers == ["Method", "Teacher", "clean", *(SHORT[c] for c in CORRUPTIONS), "Average (corruptions)"]
    assert "gauss = fashion-mnist-c/gaussian_noise/5" in text  # the short headers' legend
    assert max(len(line) for line in text.splitlines()) <= 160
    assert list(body) == ["CLIP", "APM"]
    for label, method in (("CLIP", "zeroshot"), ("APM", "apm")):
        accs = [100 * np.mean(outcomes(method, k)) for k in range(16)]
        assert [c.split(" ")[0] for c in body[label][:16]] == [f"{a:.1f}" for a in accs]
        assert all(c.endswith("(n=6)") for c in body[label][:16])
        assert body[label][16].startswith(f"{np.mean(accs[1:]):.1f} [") and body[label][16].endswith("(n=90)")
    assert "[paper]" not in text and "[ours - paper]" not in text and "stated" not in text


def test_cli_report_takes_the_new_table(tmp_path):
    from typer.testing import CliRunner

    import cli

    rows = [make_row("fashion-mnist-c/fog/5", "zeroshot", i, True, **TEACHER) for i in range(3)]
    done = CliRunner().invoke(cli.app, ["report", str(write_run(tmp_path, rows)), "--table", "fashion-mnist-c"])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("### Fashion-MNIST-C") and "[paper]" not in done.stdout
