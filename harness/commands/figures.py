"""`apm-bench plot`: figures from runs' rows, or APM's islands of agreement on one image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness import settings
from harness.commands.common import echo, interruptible
from harness.config import TeacherConfig
from harness.errors import HarnessError, Problems, collect

ISLANDS_APM = {"image_size": 64, "patch_size": 8, "hidden": (256, 256, 128), "lr": 1e-3, "use_patch": True}
"""The smoke suite's small APM, with each location's pixels in its query as in the paper's figure
(tests/test_islands_cli.py checks that islands appear at these defaults)."""


@interruptible
def plot(
    targets: Annotated[Optional[list[str]], typer.Argument(
        metavar="[RUN_DIR]... | islands IMAGE",
        help="Run directories (default the newest): accuracy vs seconds and TTT loss PNGs. "
             "Or `islands IMAGE`: APM's per-location features in colour at several TTT steps.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder (or .png for islands). Default RUN_DIR/figures, or figures/ for islands.")] = None,
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    # islands defaults: the smoke suite's trained teacher (a random teacher shows no islands)
    model: Annotated[str, typer.Option(help="islands: teacher architecture.")] = "apm-mini",
    pretrained: Annotated[str, typer.Option(help="islands: teacher weights.")] = "synthetic-teacher",
    iterations: Annotated[str, typer.Option(help="islands: TTT steps to show, comma-separated.")] = "0,5,20,50",
    seed: Annotated[int, typer.Option(help="islands: seed of the APM draw.")] = 0,
    device: Annotated[str, typer.Option(help="islands: auto, cpu or cuda.")] = "auto",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="apm.FIELD=VALUE",
        help="islands: an APM setting, repeatable; defaults: the smoke suite's small APM with each location's "
             "pixels in its query (use_patch=true).")] = None,
) -> None:
    """PNG figures: from runs' Parquet files, or (`plot islands IMAGE`) from APM trained on one image."""
    targets = list(targets or [])
    if targets[:1] == ["islands"]:
        from harness.report.islands import plot_islands

        if len(targets) != 2:
            raise HarnessError("usage: apm-bench plot islands IMAGE (exactly one image)")
        try:
            steps = tuple(int(s) for s in iterations.split(",") if s.strip())
        except ValueError:
            raise HarnessError(f"--iterations expects comma-separated integers, got '{iterations}'") from None
        problems: list[str] = []
        given: dict[str, dict[str, object]] = {}
        for text in set_ or []:
            parsed = collect(problems, settings.parse_assignment, text)
            if parsed:
                given.setdefault(parsed[0], {})[parsed[1]] = parsed[2]
        apm = settings.apply(("apm",), {"apm": ISLANDS_APM}, given, problems).get("apm")
        if problems:
            raise Problems(problems)
        path = plot_islands(Path(targets[1]), out or Path("figures"), TeacherConfig(model=model, pretrained=pretrained),
                            apm, steps, seed, device)
        echo(str(path))
        return
    from harness.report.figures import run_figures
    from harness.report.inputs import read_report_input

    read = read_report_input([Path(t) for t in targets], out_root)
    for path in run_figures(read.rows, out or read.runs[0].run_dir / "figures"):
        echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(plot)
