"""`report --format html`: one self-contained page worth sending. The accuracy tables (a paper layout
with its paired differences and cost, or the plain pivots), the figures as embedded PNGs, a gallery of
the samples each method changed, and the runs read with their provenance, in one file that needs no
network (htmldoc's Content-Security-Policy forbids it).

`html_report` builds the whole page from what the report read (inputs.ReportInput). The two format
registries hand their renderers only the filled tables (render.FORMATS a plain.PlainReport,
render_paper.PAPER_FORMATS a paper.PaperReport): `plain_page` and `paper_page` are the same page
with the parts they have no input for (figures, samples, runs) left out."""

from __future__ import annotations

import base64
import html

import pandas as pd

from harness.report.gallery import build_gallery
from harness.report.htmlgallery import gallery_section
from harness.report.htmlcells import paper_grids, plain_grids, stream_grid
from harness.report.htmldoc import html_document
from harness.report.htmlruns import runs_section
from harness.report.htmltable import Grid, render_grid
from harness.report.inputs import ReportInput
from harness.report.paper import PaperReport, build_report
from harness.report.plain import PlainReport, build_plain
from harness.report.rowset import RowSet
from harness.report.stats import RESAMPLES
from harness.report.tables import TABLES
from harness.report.trust import TRUST_TABLE, TrustReport, build_trust
from harness.report.trust_html import empty_notes as trust_empty_notes
from harness.report.trust_html import grids as trust_grids

PLAIN_TITLE = "apm-bench report: method x task"
TRUST_TITLE = "apm-bench report: trust"


def _nav(links: list[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in links) + "</nav>"


def _tables(grids: list[Grid], headings: list[str]) -> str:
    return "\n".join(f"<h2>{html.escape(h)}</h2>\n{render_grid(g)}" if h else render_grid(g)
                     for g, h in zip(grids, headings))


def figures_section(rows: RowSet | pd.DataFrame) -> str:
    """Accuracy against seconds and the TTT loss panels, drawn from the rows and embedded as PNG.
    matplotlib is imported here, not with the module: the format registries import this page, and a
    markdown report should not pay for a plotting library."""
    from harness.report.figures import DPI, accuracy_figure, loss_figure, png_bytes
    from harness.report.reliability_figure import reliability_figure
    from harness.report.stream_figure import stream_figure

    parts = ['<h2 id="figures">Figures</h2>']
    figures = [
        ("accuracy_vs_seconds", accuracy_figure(rows), "Top-1 accuracy against the median seconds per sample, "
                                                       "over every row read."),
        ("ttt_loss", loss_figure(rows), "TTT loss per step, one panel per method on its own scale."),
    ]
    along = stream_figure(rows)
    if along is not None:
        figures.append(("accuracy_along_stream", along, "Online methods: running top-1 accuracy along the stream, "
                                                        "mean over streams, band from the worst to the best."))
    calibration = reliability_figure(rows)
    if calibration is not None:
        figures.append(("reliability", calibration, "Reliability: each method's clean in-distribution rows binned "
                                                    "by confidence; a calibrated method's bars follow the diagonal."))
    for name, fig, caption in figures:
        width, height = (round(v * DPI) for v in fig.get_size_inches())
        data = base64.b64encode(png_bytes(fig)).decode("ascii")
        parts.append(f'<figure class="plot"><img id="{name}" alt="{name}.png" width="{width}" height="{height}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    return "\n".join(parts)


def _markers(unfinished: tuple[str, ...]) -> str:
    """The unfinished runs, said first and loudly, as in every format's body."""
    return "\n".join(f'<p class="unfinished"><span class="state no">NOT FINISHED</span> {html.escape(m)}</p>'
                     for m in unfinished)


def _paper_parts(report: PaperReport) -> tuple[list[tuple[str, str]], str]:
    main, paired, cost = paper_grids(report)
    links = [("accuracy", "accuracy"), ("paired", "paired differences"), ("cost", "cost")]
    grids, headings = [main, paired, cost], ["Accuracy", "Paired differences against zero-shot", "Cost"]
    if report.streams:
        links.append(("streams", "streams"))
        grids.append(stream_grid(report.streams))
        headings.append("Online methods over their streams")
    return links, _markers(report.unfinished) + _tables(grids, headings)


def _plain_parts(report: PlainReport) -> tuple[list[tuple[str, str]], str]:
    grids = plain_grids(report)
    headings = ["Accuracy"] + [""] * (len(grids) - 1)
    return [(g.anchor, g.anchor.replace("-", " ")) for g in grids], _markers(report.unfinished) + _tables(grids, headings)


def _page(title: str, links: list[tuple[str, str]], sections: list[str], lead: str = "") -> str:
    body = [f"<h1>{html.escape(title)}</h1>", _nav(links)] + ([lead] if lead else []) + sections
    return html_document(title, "\n".join(body))


def _lead(read: ReportInput) -> str:
    """One line on top: which runs the rows come from."""
    names = ", ".join(r.run_dir.name for r in read.runs)
    return f'<p>Rows of {len(read.runs)} run(s): {html.escape(names)} (<a href="#runs">provenance</a>).</p>'


def html_report(read: ReportInput, table: str | None = None, reference: bool = True, seed: int = 0,
                resamples: int = RESAMPLES) -> str:
    """The whole page: tables (`table` a paper layout, or None for the plain pivots), figures, the
    gallery and the runs read."""
    if table is None:
        plain = build_plain(read.rows, seed, resamples, read.progress, read.notes)
        title, (links, tables) = PLAIN_TITLE, _plain_parts(plain)
    elif table == TRUST_TABLE:
        trust = build_trust(read.rows, seed, resamples, read.notes)
        title, (links, tables) = TRUST_TITLE, _trust_parts(trust, read.progress.markers())
    else:
        report = build_report(read.rows, TABLES.get(table), reference, seed, resamples, read.notes, read.progress)
        title, (links, tables) = report.spec.title, _paper_parts(report)
    sections = [tables, figures_section(read.rows), gallery_section(build_gallery(read.runs, _side_by_side(read.rows))),
                runs_section(read.runs, read.notes if table is None else ())]
    links += [("figures", "figures"), ("gallery", "samples"), ("runs", "runs read")]
    return _page(title, links, sections, _lead(read))


def _side_by_side(rows: RowSet) -> bool:
    """Whether the runs' rows are kept apart by run (inputs.read_report_input), not pooled."""
    return bool(rows.query("SELECT count(*) FILTER (WHERE run <> '') > 0 FROM rows").iloc[0, 0])


def _trust_parts(report: TrustReport, unfinished: tuple[str, ...] = ()) -> tuple[list[tuple[str, str]], str]:
    grids = trust_grids(report)
    empty = "".join(f"<p>{html.escape(note)}</p>" for note in trust_empty_notes(report))
    return [(g.anchor, g.anchor) for g in grids], _markers(unfinished) + _tables(grids, [""] * len(grids)) + empty


def trust_page(report: TrustReport) -> str:
    """The page of a trust table alone (trust_render.TRUST_FORMATS): its tables."""
    links, tables = _trust_parts(report)
    return _page(TRUST_TITLE, links, [tables])


def plain_page(report: PlainReport) -> str:
    """The page of a plain report alone (render.FORMATS): its tables; no rows or runs to draw from."""
    links, tables = _plain_parts(report)
    return _page(PLAIN_TITLE, links, [tables])


def paper_page(report: PaperReport) -> str:
    """The page of a filled layout alone (render_paper.PAPER_FORMATS): its three tables."""
    links, tables = _paper_parts(report)
    return _page(report.spec.title, links, [tables])
