"""Text that leaves the harness for a reader. Task, method, class and teacher names and paths come from
folders, plugins and the command line, so they may hold anything: a `|` or a newline that breaks a
markdown table, `<script>` that a markdown viewer passes on as HTML, or an ANSI escape that recolours,
moves or rewrites the user's terminal. Both are made inert here, once, for every output that carries
them (reports via harness.report, command output via harness.commands.common.echo). Imports nothing
heavy: the CLI uses it before any command has started."""

from __future__ import annotations

import html
import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL, except tab and newline (which lay out lines, not drive the terminal)."""


def terminal_safe(text: str) -> str:
    """`text` with every control character shown as `\\xNN`, so a name holding ESC[31m reads as such
    instead of colouring (or clearing, or retitling) the terminal; newline and tab are kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def markdown_cell(text: str) -> str:
    """`text` as one markdown table cell or list line: `|` escaped so it cannot end the cell, line
    breaks shown as `\\n` / `\\r` so one row stays one line, and `<`, `>`, `&` as entities so no raw
    HTML reaches a viewer that renders it (GitHub-flavoured markdown passes HTML through)."""
    text = html.escape(text, quote=False)
    return text.replace("|", "\\|").replace("\r", "\\r").replace("\n", "\\n")
