"""The one HTML page wrapper of the reports, so that `--format html` (plain pivot or paper layout) writes
a file a browser opens as a document (doctype, language, UTF-8, title), not a fragment.

The page is self-contained: its style is inline here, figures and thumbnails are data: URIs, and a
Content-Security-Policy lets the browser fetch nothing else (no script, font, stylesheet or image from
anywhere), so a report mailed or archived reads the same offline and cannot call out."""

from __future__ import annotations

import html

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
:root{--fg:#1c2430;--muted:#5b6675;--line:#d5dae1;--head:#f1f4f8;--group:#e6ecf4;--best:#e3f4e8;--up:#17723a;
--down:#b3261e;--accent:#2b59a8}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);margin:0 auto;
max-width:1400px;padding:12px 20px 40px}
h1{font-size:21px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;padding-bottom:3px;
border-bottom:2px solid var(--line)}h3{font-size:15px;margin:18px 0 6px}
nav{font-size:13px;color:var(--muted)}nav a{color:var(--accent);margin-right:12px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
h3.caption{font-size:14px;margin:12px 0 4px}
h3.caption .teacher{font-weight:400;color:var(--muted);margin-left:10px;white-space:nowrap}
th,td{border:1px solid var(--line);padding:3px 4px;vertical-align:top}
thead th{background:var(--head);font-weight:600;font-size:12.5px;text-align:center;vertical-align:bottom}
th abbr{text-decoration:underline dotted;cursor:help}
th.label{text-align:left;font-weight:600;white-space:nowrap;max-width:16em;overflow-wrap:break-word}
tbody th.label{font-weight:500;white-space:normal}
td.num{text-align:right;white-space:nowrap}
td .v{display:block}td .sub{display:block;font-size:10px;color:var(--muted);line-height:1.2}
td.best{background:var(--best)}td.best .v{font-weight:700}
td.nodata{color:var(--muted)}td.open{background:#fff4d6}p.unfinished{background:#fff4d6;padding:4px 8px}td.up .v{color:var(--up)}td.down .v{color:var(--down)}
tr.group th{background:var(--group);text-align:left;font-weight:600}
tr.paper td,tr.paper th{color:var(--muted);font-style:italic}
tr.vs-paper td .v{font-size:12.5px}
ul.notes{font-size:12.5px;color:var(--muted);margin:4px 0 0;padding-left:18px}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:13px;margin:6px 0}
dl.run dt{color:var(--muted)}dl.run dd{margin:0;min-width:0;overflow-wrap:anywhere}
code{font-size:12px}.state{font-weight:700;padding:0 6px;border-radius:3px}
.state.ok{background:var(--best);color:var(--up)}.state.no{background:#fbe3e1;color:var(--down)}
details{margin:4px 0}summary{cursor:pointer;color:var(--accent)}
pre{font-size:12px;background:var(--head);padding:6px 8px;white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0}
figure.plot{margin:8px 0}figure.plot img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:12.5px;color:var(--muted)}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 10px}
.thumbs figure{margin:0;width:104px;font-size:11px;line-height:1.25}
.thumbs img{width:96px;height:96px;object-fit:contain;background:#000;display:block;border:4px solid var(--line)}
.fixed img{border-color:#7cc495}.broke img{border-color:#e39a94}
.thumbs b{display:block}.thumbs .kind{width:48px;font-size:12px;color:var(--muted);padding-top:38px}.muted{color:var(--muted)}
"""
"""Hand-written: a few dozen rules, no framework; numbers in tabular figures so columns align."""


def html_document(title: str, body: str) -> str:
    """A complete HTML5 page with `body` (already HTML) inside <body>; `title` is plain text."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        f'<head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body>\n"
        "</html>\n"
    )
