"""The one HTML page wrapper of the reports, so that `--format html` (plain pivot or paper layout) writes
a file a browser opens as a document (doctype, language, UTF-8, title), not a fragment."""

from __future__ import annotations

import html


def html_document(title: str, body: str) -> str:
    """A complete HTML5 page with `body` (already HTML) inside <body>; `title` is plain text."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        f'<head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body>\n{body}\n</body>\n"
        "</html>\n"
    )
