"""`apm-bench plot`: figures from runs' rows, or APM's islands of agreement on one image."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.commands.common import interruptible, parse_widths
from harness.config import ApmConfig, TeacherConfig
from harness.errors import HarnessError


@interruptible
def plot(
    targets: Annotated[Optional[list[str]], typer.Argument(
        metavar="[RUN_DIR]... | islands IMAGE",
        help="Run directories (default the newest): accuracy vs seconds and TTT loss PNGs. "
             "Or `islands IMAGE`: APM's per-location features in colour at several TTT steps.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder (or .png for islands). Default RUN_DIR/figures, or figures/ for islands.")] = None,
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    # islands defaults: the smoke suite's trained teacher and small APM (tests/test_islands_cli.py checks them),
    # with each location's pixels in its query as in the paper's figure; a random teacher shows no islands
    model: Annotated[str, typer.Option(help="islands: teacher architecture.")] = "apm-mini",
    pretrained: Annotated[str, typer.Option(help="islands: teacher weights.")] = "synthetic-teacher",
    iterations: Annotated[str, typer.Option(help="islands: TTT steps to show, comma-separated.")] = "0,5,20,50",
    seed: Annotated[int, typer.Option(help="islands: seed of the APM draw.")] = 0,
    device: Annotated[str, typer.Option(help="islands: auto, cpu or cuda.")] = "auto",
    apm_image_size: Annotated[int, typer.Option(min=1, help="islands: APM input side S (resize, no crop).")] = 64,
    apm_patch_size: Annotated[int, typer.Option(min=1, help="islands: APM trigger conv kernel and stride; grid (S/p)^2.")] = 8,
    apm_hidden: Annotated[str, typer.Option(help="islands: APM hidden widths of the shared MLP.")] = "256,256,128",
    apm_lr: Annotated[float, typer.Option(min=0.0, help="islands: APM Adam learning rate.")] = 1e-3,
    apm_pooling: Annotated[str, typer.Option(help="islands: APM pooling, attention or mean.")] = "attention",
    apm_use_patch: Annotated[bool, typer.Option(help="islands: each location's own pixels in its query.")] = True,
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
        flags = {"image_size": apm_image_size, "patch_size": apm_patch_size, "hidden": parse_widths(apm_hidden),
                 "lr": apm_lr, "pooling": apm_pooling, "use_patch": apm_use_patch}
        apm = dataclasses.replace(ApmConfig(), **{k: v for k, v in flags.items() if v is not None})
        path = plot_islands(Path(targets[1]), out or Path("figures"), TeacherConfig(model=model, pretrained=pretrained),
                            apm, steps, seed, device)
        typer.echo(str(path))
        return
    from harness.report.figures import run_figures
    from harness.report.inputs import read_report_input

    read = read_report_input([Path(t) for t in targets], out_root)
    for path in run_figures(read.rows, out or read.runs[0].run_dir / "figures"):
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(plot)
