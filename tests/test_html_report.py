"""`--format html` writes a complete document (doctype, <html lang>, <head> with charset and title, the
tables in <body>), for the plain pivot and for the paper layouts, from one shared wrapper."""

from html.parser import HTMLParser

from typer.testing import CliRunner

from harness import resultfiles
from harness.report.htmldoc import html_document
from harness.report.render import render, render_table
from test_report_tables import fixture_rows, write_run


class Outline(HTMLParser):
    """The parts of a page these tests check: declaration, tags in order, the title, where tables sit."""

    def __init__(self) -> None:
        super().__init__()
        self.decl: str | None = None
        self.tags: list[tuple[str, dict]] = []
        self.open: list[str] = []
        self.title = ""
        self.tables_in_body = 0

    def handle_decl(self, decl: str) -> None:
        self.decl = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table" and "body" in self.open:
            self.tables_in_body += 1
        if tag != "meta":
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    def handle_data(self, data):
        if self.open[-1:] == ["title"]:
            self.title += data


def outline(text: str) -> Outline:
    parser = Outline()
    parser.feed(text)
    return parser


def assert_document(text: str, title: str, tables: int) -> None:
    assert text.startswith("<!DOCTYPE html>\n")
    page = outline(text)
    assert page.decl == "DOCTYPE html"
    names = [t for t, _ in page.tags]
    assert names[:4] == ["html", "head", "meta", "title"] and page.tags[0][1] == {"lang": "en"}
    assert page.tags[2][1] == {"charset": "utf-8"} and names.index("body") > names.index("title")
    assert page.title == title and page.tables_in_body == tables == names.count("table")
    assert text.rstrip().endswith("</body>\n</html>") and page.open == []


def test_the_wrapper_escapes_the_title_and_keeps_the_body():
    text = html_document("a < b & c", "<p>x</p>")
    assert "<title>a &lt; b &amp; c</title>" in text and "<body>\n<p>x</p>\n</body>" in text


def test_plain_pivot_html_is_a_document(tmp_path):
    rows = resultfiles.read_rows([write_run(tmp_path, fixture_rows())])
    assert_document(render(rows, "html"), "apm-bench report: method x task", tables=3)  # top-1, top-5, recall


def test_paper_table_html_is_a_document(tmp_path):
    rows = resultfiles.read_rows([write_run(tmp_path, fixture_rows())])
    text = render_table(rows, "natural-shift", "html")
    assert_document(text, "Table 1: natural distribution shift, top-1 accuracy (%)", tables=3)
    assert '<section class="apm-bench-report">' in text and "<th>ImageNet-A" in text


def test_cli_report_html_both_ways(tmp_path):
    import cli

    run_dir = write_run(tmp_path, fixture_rows())
    runner = CliRunner()
    plain = runner.invoke(cli.app, ["report", str(run_dir), "--format", "html"])
    assert plain.exit_code == 0, plain.output
    assert_document(plain.stdout, "apm-bench report: method x task", tables=3)
    paper = runner.invoke(cli.app, ["report", str(run_dir), "--table", "natural-shift", "--format", "html"])
    assert paper.exit_code == 0, paper.output
    assert_document(paper.stdout, "Table 1: natural distribution shift, top-1 accuracy (%)", tables=3)
