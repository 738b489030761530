"""`apm-bench ls` (suites, tasks and where they look for data, methods) and `apm-bench runs`."""

from __future__ import annotations

from pathlib import Path
import textwrap
from typing import Annotated, Optional

import typer

from harness.commands.common import DataRoot, echo, interruptible
from harness.errors import HarnessError
from harness.registry import unknown_name_message


SECTIONS = ("suites", "tasks", "methods")


@interruptible
def list_things(
    what: Annotated[Optional[str], typer.Argument(help="suites, tasks or methods; default all.")] = None,
    name: Annotated[Optional[str], typer.Argument(help="With `methods`: only this method.")] = None,
    data_root: DataRoot = None,
) -> None:
    """Suites, tasks (where each looks for data, and what it found there), and methods with every
    setting, its default and where the default comes from (`--set METHOD.FIELD=VALUE` changes one)."""
    if what is not None and what not in SECTIONS:
        raise HarnessError(unknown_name_message("section of ls", what, SECTIONS))
    if name is not None and what != "methods":
        raise HarnessError(f"`apm-bench ls {what} {name}`: only methods are listed one at a time (ls methods NAME)")
    if what in (None, "suites"):
        _suites()
    if what in (None, "tasks"):
        _tasks(data_root)
    if what in (None, "methods"):
        _methods(verbose=what == "methods", only=name)


def _suites() -> None:
    from tasks.registry import SUITES

    echo("suites:")
    for name, s in SUITES.items():
        echo(f"  {name:<16} {s.description}; {len(s.tasks)} task(s), methods {','.join(s.methods)}")


def _tasks(data_root: Path | None) -> None:
    from tasks.registry import TASKS, resolve_task

    echo(f"tasks (data root: {data_root or 'not set; --data-root or APM_BENCH_DATA'}):")
    for name, family in TASKS.items():
        echo(f"  {name:<16} {family.description}")
        if family.layouts:
            echo(f"  {'':<16} looks for: {', '.join(family.layouts)}")
        if family.hub:
            echo(f"  {'':<16} hub: {family.hub.hub_id}" + ("" if family.hub.same_test_set else " (not the paper's test set)"))
        specs = family.examples or ((name,) if family.layouts else ())
        found: dict[str, str] = {}
        for spec in specs:
            try:
                task = resolve_task(spec, data_root=str(data_root) if data_root else None)
                found[spec] = f"found {len(task.samples())} samples, {len(task.classnames)} classes"
            except HarnessError:
                found[spec] = "not found" if data_root else "no data root"
        if len(specs) > 1 and set(found.values()) == {"no data root"}:  # said once per family, not per member
            found = {f"{name} ({len(specs)} tasks)": "no data root"}
        for spec, text in found.items():
            echo(f"  {'':<16} {spec}: {text}")


def _methods(verbose: bool, only: str | None = None) -> None:
    """Every method (or `only` one); with `ls methods`, each setting as `name = default  (type)` and its
    docstring."""
    from harness.methods import METHODS
    from harness.presets import FIELD, PRESETS
    from harness.settings import describe

    if only is not None and only not in METHODS:  # a name given here, not a --method
        raise HarnessError(unknown_name_message("method", only, METHODS.names()))
    entries = [(only, METHODS.get(only))] if only is not None else list(METHODS.items())
    echo("methods:" if verbose else "methods (`apm-bench ls methods` for their settings):")
    for name, entry in entries:
        echo(f"  {name:<16} {entry.summary}" + (f" [{entry.paper}]" if entry.paper else ""))
        kind = entry.settings_class() if verbose else None
        for field, hint, default, doc in describe(kind) if kind else ():
            echo(f"    {name}.{field} = {default}  ({hint})")
            for line in textwrap.wrap(doc, 96):
                echo(f"        {line}")
        if kind and name in PRESETS:
            echo(f"    {name}.{FIELD} = unset  (one of: {', '.join(PRESETS[name].names())})")
            echo("        Several settings at once; a setting given beside it (or later) wins over the preset's.")
            for preset, entry in PRESETS[name].items():
                values = ", ".join(f"{k}={_shown(v)}" for k, v in entry.fields.items())
                for line in textwrap.wrap(f"{preset}: {values}; {entry.description}", 96):
                    echo(f"        {line}")


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@interruptible
def runs(
    out_root: Annotated[Path, typer.Option(help="Folder holding run directories.")] = Path("results"),
) -> None:
    """The runs under --out-root, newest first: suite, teacher, methods, progress, start (manifests and
    Parquet footers only)."""
    from harness.report.runs import list_runs, render_runs

    echo(render_runs(list_runs(out_root), out_root))


@interruptible
def verify(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to check.")],
) -> None:
    """Check every result file of the runs against its record (sha256, rows, run): one line per file
    that fails, and exit 1 if any does. `apm-bench run --resume RUN_DIR` repairs what fails."""
    from harness import resultfiles
    from harness.rundir import read_manifest

    failed = 0
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir)
        verdict = resultfiles.verify(run_dir, manifest.get("fingerprint"))
        total = manifest.get("shards_total") or "?"
        echo(f"{run_dir}: {len(verdict.files)} result file(s) verified, {len(verdict.shards)}/{total} shards "
             f"finished, {len(verdict.bad)} file(s) failed")
        for path, reason in verdict.bad:
            echo(f"{path}: {reason}", err=True)
        failed += len(verdict.bad)
    if failed:
        echo(f"error: {failed} result file(s) failed verification; repair with: apm-bench run --resume RUN_DIR",
             err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ls")(list_things)
    app.command("runs")(runs)
    app.command("verify")(verify)
