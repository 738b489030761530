"""`--format html`: one self-contained document (doctype, language, charset, title, a Content-Security-
Policy that lets it load nothing), styled tables read from the report objects (the interval on a
second line, n on hover, short headers with the full name on hover, the teacher once, the best value
of each column marked), the figures and the sample gallery embedded as data: URIs, and the runs read
with their provenance. How it renders in a browser: tests/test_html_browser.py."""

import base64
import io
import re
from html.parser import HTMLParser

import pytest
from PIL import Image
from typer.testing import CliRunner

from harness import resultfiles
from harness.report import figures
from harness.report.gallery import PER_KIND, build_gallery
from harness.report.htmldoc import CSP, html_document
from harness.report.htmltable import Column, Entry, Grid, Record, abbreviate, render_grid
from harness.report.inputs import read_report_input
from harness.report.render import render, render_table
from report_runs import SHA, fashion_rows, fashion_run, synthetic_run, write_run
from test_report_tables import fixture_rows
from test_report_tables import write_run as write_plain_run


class Outline(HTMLParser):
    """The parts of a page these tests check: declaration, tags in order with their attributes, the
    title, where tables sit, and the text of each element by id."""

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
        if tag not in ("meta", "img", "wbr"):
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


def assert_document(text: str, title: str, tables: int) -> Outline:
    assert text.startswith("<!DOCTYPE html>\n")
    page = outline(text)
    assert page.decl == "DOCTYPE html"
    names = [t for t, _ in page.tags]
    assert names[:4] == ["html", "head", "meta", "title"] and page.tags[0][1] == {"lang": "en"}
    assert page.tags[2][1] == {"charset": "utf-8"} and names.index("body") > names.index("title")
    assert {"http-equiv": "Content-Security-Policy", "content": CSP} in [a for t, a in page.tags if t == "meta"]
    assert page.title == title and page.tables_in_body == tables == names.count("table")
    assert text.rstrip().endswith("</body>\n</html>") and page.open == []
    return page


def assert_self_contained(text: str) -> None:
    """Nothing the browser would fetch: every src is a data: URI, no stylesheet or script is linked,
    links stay on the page."""
    page = outline(text)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object"), tag
        if "src" in attrs:
            assert attrs["src"].startswith("data:"), (tag, attrs["src"][:60])
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs["href"]
    assert "url(" not in text and "@import" not in text


def images(text: str, kind: str) -> list[Image.Image]:
    found = re.findall(rf'src="data:image/{kind};base64,([A-Za-z0-9+/=]+)"', text)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


def test_the_wrapper_escapes_the_title_keeps_the_body_and_forbids_fetching():
    text = html_document("a < b & c", "<p>x</p>")
    assert "<title>a &lt; b &amp; c</title>" in text and "<body>\n<p>x</p>\n</body>" in text
    assert CSP == "default-src 'none'; img-src data:; style-src 'unsafe-inline'" and "<style>" in text


def test_plain_and_paper_pages_from_the_format_registries(tmp_path):
    rows = resultfiles.read_rows([write_plain_run(tmp_path, fixture_rows())])
    plain = render(rows, "html")
    assert_document(plain, "apm-bench report: method x task", tables=3)  # top-1, top-5, recall
    assert 'id="accuracy"' in plain and 'id="top5-accuracy"' in plain and 'id="mean-per-class-recall"' in plain
    paper = render_table(rows, "natural-shift", "html")
    assert_document(paper, "Table 1: natural distribution shift, top-1 accuracy (%)", tables=3)
    assert 'id="accuracy"' in paper and 'id="paired"' in paper and 'id="cost"' in paper
    for text in (plain, paper):
        assert_self_contained(text)


def test_paper_cells_read_from_the_report(tmp_path):
    """APM's ImageNet cell: 4 of 4 (100.0, no spread, nothing below it); ImageNet-A 2 of 4 with its
    interval below; the teacher once, in the heading; the paper's rows marked and never ranked."""
    rows = resultfiles.read_rows([write_plain_run(tmp_path, fixture_rows())])
    ours = render_table(rows, "natural-shift", "html", reference=False)
    assert ours.count("teacher ViT-B/16") == 3 and '<tr class="group">' not in ours  # once per table, no column
    assert ">Teacher<" not in ours
    text = render_table(rows, "natural-shift", "html")
    apm = re.search(r'<tr class="measured"><th scope="row" class="label"[^>]*>APM</th>(.*?)</tr>', text).group(1)
    cells = re.findall(r"<td([^>]*)><span class=\"v\">([^<]*)</span>(?:<span class=\"sub\">([^<]*)</span>)?", apm)
    assert cells[0][1:] == ("100.0", "") and "n=4" in cells[0][0] and "best" in cells[0][0]
    assert cells[1][1] == "50.0" and re.fullmatch(r"\d+\.\d–\d+\.\d", cells[1][2])
    assert "n=3" in cells[2][0] and "1 error rows left out" in cells[2][0]
    assert '<tr class="paper">' in text
    paper_cells = re.findall(r'<tr class="paper">.*?</tr>', text)
    assert paper_cells and all("best" not in line for line in paper_cells)


def test_short_headers_keep_the_full_name_on_hover():
    assert abbreviate(["fashion-mnist-c/gaussian_noise/5", "fog", "Average (corruptions)", "imagenet"]) == [
        "gauss", "fog", "Average", "imagenet"]
    assert abbreviate(["imagenet-c/fog/3", "imagenet-c/fog/5"]) == ["imagenet-c/fog/3", "imagenet-c/fog/5"]
    grid = Grid("t", "T", (Column("gauss", "gaussian_noise (task fashion-mnist-c/gaussian_noise/5)"),),
                (Record("A", (Entry("1.0", value=1.0),), "x", ranked=True),))
    text = render_grid(grid)
    assert ('<th scope="col" title="gaussian_noise (task fashion-mnist-c/gaussian_noise/5)"><abbr>gauss</abbr></th>'
            in text)


def test_best_is_per_teacher_column_as_displayed_and_only_where_values_differ():
    def rec(label, values, group="t1", ranked=True):
        return Record(label, tuple(Entry(f"{v}", value=v) for v in values), group, ranked=ranked)

    grid = Grid("g", "G", (Column("a", "a"), Column("b", "b"), Column("c", "c")), (
        rec("x", [50.04, 10.0, 5.0]), rec("y", [49.96, 20.0, 5.0]), rec("v", [40.0, 15.0, 5.0]),
        rec("paper", [99.0, 99.0, 99.0], ranked=False), rec("z", [1.0, 2.0, 3.0], "t2"), rec("w", [2.0, 1.0, 3.0], "t2")))
    text = render_grid(grid)
    rows = re.findall(r"<tr class=\"\">(.*?)</tr>", text)
    marked = [[("best" in cell) for cell in re.findall(r"<td[^>]*>", row)] for row in rows]
    assert marked == [[True, False, False], [True, True, False], [False, False, False],  # 50.0 shown twice: both
                      [False, False, False],  # the paper's row is not ranked; column c is all alike
                      [False, True, False], [True, False, False]]  # the other teacher on its own
    assert text.count('<tr class="group">') == 2  # two teachers: a heading row each, none in the caption


def test_the_cli_page_has_figures_gallery_and_provenance(tmp_path):
    import cli

    run_dir = synthetic_run(tmp_path)  # drawn images: the gallery needs no data
    done = CliRunner().invoke(cli.app, ["report", str(run_dir), "--format", "html"])
    assert done.exit_code == 0, done.output
    text = done.stdout
    assert_document(text, "apm-bench report: method x task", tables=3)
    assert_self_contained(text)
    pngs = images(text, "png")
    assert [im.size for im in pngs] == [(figures.RUN_FIGSIZE[0] * figures.DPI, figures.RUN_FIGSIZE[1] * figures.DPI)] * 2 \
        + [(520, 300)]  # and the reliability diagrams, a panel per method
    thumbs = images(text, "jpeg")
    assert thumbs and all(im.format == "JPEG" and max(im.size) <= 96 for im in thumbs)
    assert len(thumbs) <= 2 * PER_KIND
    for field in (SHA, "apm-mini / fashion-mnist-teacher", "0123abcd", "open_clip_torch=", "Intel(R) Xeon(R)",
                  "steps=10", 'class="state ok">finished'):
        assert field in text, field
    assert len(text.encode()) < 1_000_000


def test_gallery_counts_and_class_names_from_the_rows(tmp_path):
    from tasks.synthetic import CLASSNAMES, SyntheticTask

    read = read_report_input([synthetic_run(tmp_path)], tmp_path)
    gallery = build_gallery(read.runs, side_by_side=False)
    (apm,) = gallery.methods
    refs = SyntheticTask().samples()
    fixed = [i for i in range(len(refs)) if i % 3 == 0 and i % 4 != 0]  # zero-shot wrong, APM right
    broke = [i for i in range(len(refs)) if i % 3 != 0 and i % 4 == 0]
    assert (apm.method, apm.compared, apm.fixed, apm.broke) == ("apm", len(refs), len(fixed), len(broke))
    assert apm.changed == len(fixed) + len(broke)  # a wrong answer is always the next class: never wrong twice apart
    shown = {t.sample_id: t for t in apm.thumbs}
    assert len([t for t in apm.thumbs if t.kind == "fixed"]) == min(PER_KIND, len(fixed))
    for i in fixed:
        ref = refs[i]
        if ref.sample_id in shown:
            thumb = shown[ref.sample_id]
            assert thumb.truth == thumb.after == CLASSNAMES[ref.label]
            assert thumb.before == CLASSNAMES[(ref.label + 1) % len(CLASSNAMES)]
    assert gallery.notes == ()


def test_gallery_is_skipped_with_a_note_when_the_data_is_gone(tmp_path):
    import cli

    run_dir = synthetic_run(tmp_path, spec="fashion-mnist:" + str(tmp_path / "gone"))  # no such task any more
    read = read_report_input([run_dir], tmp_path)
    gallery = build_gallery(read.runs, side_by_side=False)
    assert gallery.methods[0].thumbs == () and gallery.methods[0].fixed > 0
    assert len(gallery.notes) == 1 and "synthetic" in gallery.notes[0] and "skipped" in gallery.notes[0]
    done = CliRunner().invoke(cli.app, ["report", str(run_dir), "--format", "html"])
    assert done.exit_code == 0 and "image/jpeg" not in done.stdout and "skipped" in done.stdout


def test_an_unfinished_run_is_marked_at_the_top_and_in_its_cells(tmp_path):
    import cli

    rows = [r for r in fashion_rows(("zeroshot", "apm")) if r.task == "fashion-mnist"]
    run_dir = write_run(tmp_path, "half", rows, ("fashion-mnist",), ("zeroshot", "apm"), samples_total=100)
    done = CliRunner().invoke(cli.app, ["report", str(run_dir), "--table", "fashion-mnist-c", "--format", "html"])
    assert done.exit_code == 0, done.output
    text = done.stdout
    first_table = text.index("<table")
    assert 'class="unfinished"' in text[:first_table] and "NOT FINISHED" in text[:first_table]
    clean = re.findall(r'<td class="([^"]*)" title="clean: [^"]*"', text)
    assert clean and all("open" in c.split() for c in clean)
    assert 'class="state no">NOT FINISHED' in text[text.index('id="runs"'):]


@pytest.mark.parametrize("table", [None, "fashion-mnist-c"])
def test_a_typical_page_stays_small(tmp_path, table):
    """Every built-in method on Fashion-MNIST-C: figures and up to 16 thumbnails per method."""
    import cli

    args = ["report", str(fashion_run(tmp_path)), "--format", "html"] + (["--table", table] if table else [])
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 0, done.output
    assert_self_contained(done.stdout)
    assert len(done.stdout.encode()) < 2_000_000
