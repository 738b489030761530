"""`apm-bench ls` (suites, tasks and where they look for data, methods) and `apm-bench runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.commands.common import DataRoot, interruptible
from harness.errors import HarnessError


@interruptible
def list_things(data_root: DataRoot = None) -> None:
    """Suites, tasks (where each looks for data, and what it found there), methods."""
    from harness.methods import METHODS
    from tasks.registry import SUITES, TASKS, resolve_task

    typer.echo("suites:")
    for name, s in SUITES.items():
        typer.echo(f"  {name:<16} {s.description}; {len(s.tasks)} task(s), methods {','.join(s.methods)}")
    typer.echo(f"tasks (data root: {data_root or 'not set; --data-root or APM_BENCH_DATA'}):")
    for name, family in TASKS.items():
        typer.echo(f"  {name:<16} {family.description}")
        if family.layouts:
            typer.echo(f"  {'':<16} looks for: {', '.join(family.layouts)}")
        if family.hub:
            typer.echo(f"  {'':<16} hub: {family.hub.hub_id}" + ("" if family.hub.same_test_set else " (not the paper's test set)"))
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
            typer.echo(f"  {'':<16} {spec}: {text}")
    typer.echo("methods: " + ", ".join(METHODS.names()))


@interruptible
def runs(
    out_root: Annotated[Path, typer.Option(help="Folder holding run directories.")] = Path("results"),
) -> None:
    """The runs under --out-root, newest first: suite, teacher, methods, progress, start (manifests and
    Parquet footers only)."""
    from harness.report.runs import list_runs, render_runs

    typer.echo(render_runs(list_runs(out_root), out_root))


@interruptible
def verify(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to check.")],
) -> None:
    """Check every result file of the runs against its record (sha256, rows, run): one line per file
    that fails, and exit 1 if any does. `apm-bench run --resume RUN_DIR` repairs what fails."""
    from harness import rundir
    from harness.store import read_manifest

    failed = 0
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir)
        verdict = rundir.verify(run_dir, manifest.get("fingerprint"))
        total = manifest.get("shards_total") or "?"
        typer.echo(f"{run_dir}: {len(verdict.files)} result file(s) verified, {len(verdict.shards)}/{total} shards "
                   f"finished, {len(verdict.bad)} file(s) failed")
        for path, reason in verdict.bad:
            typer.echo(f"{path}: {reason}", err=True)
        failed += len(verdict.bad)
    if failed:
        typer.echo(f"error: {failed} result file(s) failed verification; repair with: apm-bench run --resume RUN_DIR",
                   err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ls")(list_things)
    app.command("runs")(runs)
    app.command("verify")(verify)
