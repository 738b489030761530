"""The runs a report read, with what makes their numbers trustworthy or not: state (finished, or what
is missing and how to finish it), teacher and the hash of its weights, the settings the rows were made
with, package versions, code version and the devices the workers ran on. Read from each run's
manifest (harness.rundir) and inputs.RunRead; nothing here is computed from rows."""

from __future__ import annotations

import html
import json
from typing import Any

from harness import rundir
from harness.report.inputs import RunRead

LISTED = 8
"""Tasks named inline; a longer list is folded."""


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in mapping.items())


def _pre(lines: list[str]) -> str:
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"


def _fold(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _tasks(tasks: list[str]) -> str:
    if len(tasks) <= LISTED:
        return html.escape(", ".join(tasks)) or "-"
    return _fold(f"{len(tasks)} tasks: {', '.join(tasks[:3])}, ...", _pre(tasks))


def _environments(environments: dict[str, Any]) -> list[str]:
    return [f"{key}: {_pairs(value) if isinstance(value, dict) else _text(value)}"
            for key, value in environments.items()]


def run_block(run: RunRead) -> str:
    """One run: a definition list of its provenance, the long parts (settings, versions, environments,
    execution) folded."""
    manifest = rundir.read_manifest(run.run_dir)
    config = manifest.get("config") or {}
    teacher = config.get("teacher") or {}
    run_id = str(manifest.get("run_id") or run.run_dir.name)
    state = ('<span class="state ok">finished</span>' if run.finished
             else '<span class="state no">NOT FINISHED</span>')
    sha = teacher.get("weights_sha256")
    extra = {k: v for k, v in teacher.items() if k not in ("model", "pretrained", "weights_sha256")}
    data = config.get("data") or {}
    items = [
        ("state", f"{state} {html.escape(run.describe())}"),
        ("teacher", html.escape(f"{teacher.get('model', '?')} / {teacher.get('pretrained', '?')}")
         + (f' <span class="muted">({html.escape(_pairs(extra))})</span>' if extra else "")),
        ("weights sha256", f"<code>{html.escape(sha)}</code>" if sha else "none recorded (random weights)"),
        ("suite", html.escape(_text(config.get("suite")))),
        ("tasks", _tasks([str(t) for t in config.get("tasks") or ()])),
        ("methods", html.escape(_text(config.get("methods")))),
        ("seed / device", html.escape(f"{_text(config.get('seed'))} / {_text(config.get('device_type'))}"
                                      + (", deterministic kernels" if config.get("deterministic") else ""))),
        ("data", html.escape(_pairs(data)) if data else "-"),
        ("started / finished", html.escape(f"{_text(manifest.get('started'))} / {_text(manifest.get('finished'))}")),
        ("fingerprint / code", f"<code>{html.escape(_text(manifest.get('fingerprint')))}</code> / "
                               f"<code>{html.escape(_text(manifest.get('code_version')))}</code>"),
    ]
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in items)
    folds = []
    settings = config.get("settings") or {}
    if settings:
        folds.append(_fold("settings", _pre([f"{m}: {_pairs(s)}" for m, s in settings.items()])))
    if manifest.get("versions"):
        folds.append(_fold("package versions", _pre([_pairs(manifest["versions"])])))
    if manifest.get("environments"):
        folds.append(_fold(f"environments ({len(manifest['environments'])})",
                           _pre(_environments(manifest["environments"]))))
    if manifest.get("execution"):
        folds.append(_fold("execution", _pre([_pairs(manifest["execution"])])))
    return (f'<h3 id="run-{html.escape(run_id)}">{html.escape(run_id)} {state}</h3>\n'
            f'<dl class="run">{body}</dl>\n' + "\n".join(folds))


def runs_section(runs: tuple[RunRead, ...], notes: tuple[str, ...] = ()) -> str:
    """Every run read, and the notes on how they were combined."""
    unfinished = sum(not r.finished for r in runs)
    head = (f"{len(runs)} run(s) read" + (f", {unfinished} NOT FINISHED: their cells miss samples" if unfinished
                                          else ", all finished"))
    parts = ['<h2 id="runs">Runs read</h2>', f"<p>{html.escape(head)}.</p>"]
    parts += [run_block(r) for r in runs]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)
