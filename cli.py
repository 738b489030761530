"""apm-bench: `run` a suite on Ray workers, `report` the Parquet it wrote, `ls` what exists."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.commands import figures, imagenet_c, listing, teacher
from harness.commands.common import INTERRUPTED, DataRoot, format_widths, interruptible, parse_widths, split_values
from harness.config import ApmConfig, DataConfig, ExecConfig, RunConfig, TeacherConfig, TptConfig
from harness.errors import HarnessError, Interrupted
from harness.methods import METHODS
from tasks.registry import TASKS

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Test-time-training benchmarks for CLIP teachers (APM, TPT, zero-shot, ensemble) on Ray.")
_APM = ApmConfig()
METHOD_NAMES = ", ".join(METHODS.names())
TASK_NAMES = ", ".join(TASKS.names())

@app.command()
@interruptible
def run(
    suite: Annotated[Optional[str], typer.Option(help="Named suite: smoke, natural-shift, imagenet-c, fine-grained, "
                                                       "fashion-mnist-c (`apm-bench ls`).")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help=f"Task spec FAMILY[/PARAM...][:PATH], repeatable; families: {TASK_NAMES}.")] = None,
    method: Annotated[Optional[list[str]], typer.Option(help=f"Method, repeatable or comma-separated: {METHOD_NAMES}.")] = None,
    model: Annotated[Optional[str], typer.Option(help="open_clip architecture, e.g. ViT-B-16, or apm-tiny.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="open_clip tag, hf-hub:ORG/REPO, checkpoint file or directory, synthetic-teacher (shipped), "
             "fashion-mnist-teacher ($APM_BENCH_HOME/teachers/fashion-mnist), or none.")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or fp16 / bf16 autocast on GPU (scoring stays fp32).")] = "fp32",
    seed: Annotated[int, typer.Option(help="Run seed; per-sample seeds derive from it.")] = 0,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 16,
    workers: Annotated[Optional[int], typer.Option(min=1, help="CPU actors (without GPUs).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per actor (fixed: results do not depend on it).")] = 1,
    cpus_per_worker: Annotated[Optional[float], typer.Option(
        min=1.0, help="CPUs a GPU worker reserves to decode images and make views; default its node's CPUs / GPUs.")] = None,
    address: Annotated[Optional[str], typer.Option(help="Existing Ray cluster (host:port); default local.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out_root: Annotated[Path, typer.Option(help="Folder holding run directories.")] = Path("results"),
    run_id: Annotated[Optional[str], typer.Option(help="Run directory name; an existing one is continued.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Finish a run directory with the config it was started with.")] = None,
    force_new: Annotated[bool, typer.Option(help="If --run-id holds another config, start a fresh run.")] = False,
    max_attempts: Annotated[int, typer.Option(min=1, help="Tries per shard before it is recorded as failed.")] = 3,
    max_restarts: Annotated[int, typer.Option(min=0, help="Restarts of a dead worker before it is retired.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_root: DataRoot = None,
    source: Annotated[str, typer.Option(help="disk or hub.")] = "disk",
    corruptions: Annotated[str, typer.Option(help="ImageNet-C: released or generated.")] = "released",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Samples per task (stratified, seeded).")] = None,
    splits_dir: Annotated[Optional[Path], typer.Option(help="Where CoOp split files are.")] = None,
    hub_revision: Annotated[Optional[str], typer.Option(help="Pin the hub revision.")] = None,
    skip_missing: Annotated[bool, typer.Option(help="Run the tasks whose data is found.")] = False,
    exif_transpose: Annotated[bool, typer.Option(
        help="Turn images upright by their EXIF tag (off: pixels as stored, as the reference loaders).")] = False,
    apm_recipe: Annotated[Optional[str], typer.Option(help=f"APM: spec (the paper) or demo (the authors' demo loop); docs/apm-method.md. [default: {_APM.recipe}]")] = None,
    apm_image_size: Annotated[Optional[int], typer.Option(min=1, help=f"APM: input side S (resize, no crop). [default: {_APM.image_size}]")] = None,
    apm_patch_size: Annotated[Optional[int], typer.Option(min=1, help=f"APM: trigger conv kernel and stride; grid (S/p)^2. [default: {_APM.patch_size}]")] = None,
    apm_hidden: Annotated[Optional[str], typer.Option(help=f"APM: hidden widths of the shared MLP. [default: {format_widths(_APM.hidden)}]")] = None,
    apm_pooling: Annotated[Optional[str], typer.Option(help=f"APM: attention or mean. [default: {_APM.pooling}]")] = None,
    apm_heads: Annotated[Optional[int], typer.Option(min=1, help=f"APM: attention heads of the pooling. [default: {_APM.heads}]")] = None,
    apm_steps: Annotated[Optional[int], typer.Option(min=0, help=f"APM: TTT steps per sample. [default: {_APM.steps}]")] = None,
    apm_lr: Annotated[Optional[float], typer.Option(min=0.0, help=f"APM: Adam learning rate. [default: {_APM.lr}]")] = None,
    apm_copies: Annotated[Optional[int], typer.Option(min=1, help=f"APM: copies of the image per step (the demo uses 8). [default: {_APM.copies}]")] = None,
    apm_init_std: Annotated[Optional[float], typer.Option(min=0.0, help=f"APM: std of the N(0, std) draw before every sample. [default: {_APM.init_std}]")] = None,
    apm_chunk_size: Annotated[Optional[int], typer.Option(min=0, help=f"APM: locations per checkpointed chunk, 0 = all. [default: {_APM.chunk_size}]")] = None,
    apm_rgb_weight: Annotated[Optional[float], typer.Option(min=0.0, help=f"APM: loss weight of the RGB head. [default: {_APM.rgb_weight}]")] = None,
    apm_use_patch: Annotated[Optional[bool], typer.Option(help=f"APM: append each location's pixels to its query. [default: {_APM.use_patch}]")] = None,
    apm_templates: Annotated[Optional[str], typer.Option(help=f"APM: classify with the task's ensemble or the single template. [default: {_APM.templates}]")] = None,
    apm_batch_size: Annotated[Optional[int], typer.Option(min=0, help=f"APM: samples trained at once; 0 fits the device. [default: {_APM.batch_size}]")] = None,
    tpt_views: Annotated[int, typer.Option(min=2, help="TPT: the centre crop plus views-1 augmented views.")] = 64,
    tpt_top: Annotated[float, typer.Option(min=0.0, max=1.0, help="TPT: fraction of lowest-entropy views kept.")] = 0.1,
    tpt_steps: Annotated[int, typer.Option(min=0, help="TPT: AdamW steps per sample.")] = 1,
    tpt_lr: Annotated[float, typer.Option(min=0.0, help="TPT: AdamW learning rate.")] = 5e-3,
    tpt_weight_decay: Annotated[float, typer.Option(min=0.0, help="TPT: AdamW weight decay.")] = 0.01,
    tpt_ctx_init: Annotated[str, typer.Option(help="TPT: the learned context's initial words.")] = "a photo of a",
    tpt_augmix: Annotated[str, typer.Option(help="TPT: AugMix on the views: auto (fine-grained sets only), on or off.")] = "auto",
    tpt_min_scale: Annotated[float, typer.Option(min=0.0, max=1.0, help="TPT: smallest area of the random crops.")] = 0.08,
    dry_run: Annotated[bool, typer.Option(help="Only plan: samples, shards, rows and device-hours per method "
                                               "(as `apm-bench plan`); nothing runs, nothing is written.")] = False,
    device_tflops: Annotated[Optional[float], typer.Option(
        min=0.0, help="Plan: a device's peak TFLOP/s, for hours from FLOPs where no earlier run has the method.")] = None,
) -> None:
    """Evaluate methods on tasks; writes results/<run-id>/ (manifest + one Parquet file per shard).
    Every argument and every task's data is checked first, and all problems are reported at once."""
    from harness.config import DEVICES, PRECISIONS
    from harness.engine.prepare import check, missing_work, resume_config
    from harness.errors import Problems, collect
    from harness.models.recipes import RECIPES
    from tasks.registry import SOURCES, SUITES

    problems: list[str] = []

    def one_of(flag: str, value: object, choices: tuple[str, ...]) -> None:
        if value is not None and value not in choices:
            problems.append(f"--{flag} must be one of {', '.join(choices)}, not '{value}'")

    if resume is not None:
        if suite or task or method:
            problems.append("--resume takes tasks, methods and settings from the run's manifest; drop --suite/--task/--method")
        out_root, run_id = resume.parent, resume.name
    chosen = collect(problems, SUITES.get, suite) if suite else None
    apm_overrides = dict(chosen.apm) if chosen else {}
    flags = {
        "image_size": apm_image_size, "patch_size": apm_patch_size, "hidden": collect(problems, parse_widths, apm_hidden),
        "pooling": apm_pooling, "heads": apm_heads, "steps": apm_steps, "lr": apm_lr, "copies": apm_copies,
        "init_std": apm_init_std, "chunk_size": apm_chunk_size, "rgb_weight": apm_rgb_weight,
        "use_patch": apm_use_patch, "templates": apm_templates, "batch_size": apm_batch_size, "recipe": apm_recipe,
    }
    apm_overrides.update({k: v for k, v in flags.items() if v is not None})
    one_of("precision", precision, PRECISIONS)
    one_of("device", device, DEVICES)
    one_of("source", source, SOURCES)
    one_of("corruptions", corruptions, ("released", "generated"))
    one_of("tpt-augmix", tpt_augmix, ("auto", "on", "off"))
    one_of("apm-templates", apm_templates, ("ensemble", "single"))
    one_of("apm-pooling", apm_pooling, ("attention", "mean"))
    if apm_recipe is not None:
        collect(problems, RECIPES.get, apm_recipe)
    config = collect(problems, resume_config, resume) if resume is not None else RunConfig(
        tasks=split_values(task) or (chosen.tasks if chosen else ()),
        methods=split_values(method) or (chosen.methods if chosen else ()),
        teacher=TeacherConfig(
            model=model or (chosen.model if chosen else "apm-tiny"),
            pretrained=pretrained or (chosen.pretrained if chosen else "none"),
            precision=precision,
        ),
        apm=dataclasses.replace(ApmConfig(), **apm_overrides),
        tpt=TptConfig(views=tpt_views, top=tpt_top, steps=tpt_steps, lr=tpt_lr, weight_decay=tpt_weight_decay,
                      ctx_init=tpt_ctx_init, augmix=tpt_augmix, min_scale=tpt_min_scale),
        data=DataConfig(source=source, corruptions=corruptions, limit=limit, hub_revision=hub_revision,
                        exif_transpose=exif_transpose),
        seed=seed,
        shard_size=shard_size,
        suite=suite,
    )
    execution = ExecConfig(
        out_root=str(out_root), run_id=run_id, address=address, workers=workers, device=device,
        threads_per_worker=threads, progress=progress,
        data_root=str(data_root) if data_root else None,
        splits_dir=str(splits_dir) if splits_dir else None,
        skip_missing=skip_missing,
        force_new=force_new,
        max_attempts=max_attempts,
        max_restarts=max_restarts,
        cpus_per_worker=cpus_per_worker,
    )
    tasks: list = []
    if config is not None:
        config, tasks, found = check(config, execution)
        if suite and chosen is None:  # a misspelt suite: its tasks and methods are not missing as well
            found = [p for p in found if p not in missing_work(config)]
        problems += found
    if problems:
        raise Problems(problems)
    if dry_run:
        from harness.plan import cost_lines, render, task_lines

        lines = task_lines(config, tasks)
        runs = [p.parent for p in Path(out_root).glob("*/manifest.json")]
        typer.echo(render(config, lines, cost_lines(config, lines, tasks, runs, device_tflops)))
        return
    from harness.engine.runner import run as run_engine  # torch, open_clip, Ray: only for a run that can start

    summary = run_engine(config, execution, tasks)
    for line in summary.repaired:
        typer.echo(f"re-ran the shards of {line}", err=True)
    if summary.unplaced:
        typer.echo(f"note: {summary.unplaced} worker(s) were never placed (the cluster's GPUs or CPUs were taken); "
                   "the others ran every shard", err=True)
    typer.echo(
        f"{summary.run_dir}: {summary.shards_done}/{summary.shards_total} shards, {summary.samples} samples, "
        f"{summary.rows_written} rows written, {summary.errors} error rows"
    )
    if summary.failed:
        for shard_id, reason in summary.failed.items():
            typer.echo(f"failed shard {shard_id}: {reason}", err=True)
        typer.echo(f"error: {len(summary.failed)} shard(s) failed; retry them with: apm-bench run --resume {summary.run_dir}", err=True)
        raise typer.Exit(3)
    if summary.rows_written and summary.errors == summary.rows_written:  # a wrong folder or weights, not bad images
        typer.echo(f"error: every row this run wrote is an error row (the first: {summary.first_error})", err=True)
        raise typer.Exit(4)
    typer.echo(f"next: apm-bench report {summary.run_dir} --format markdown")


@app.command()
@interruptible
def report(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories; default the newest.")] = None,
    format: Annotated[str, typer.Option("--format", help="markdown, latex, csv, html or json.")] = "markdown",
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    table: Annotated[Optional[str], typer.Option(
        help="A paper layout: natural-shift (Table 1), imagenet-c (Table 2), fine-grained (Table 3), or "
             "fashion-mnist-c (Table 2's layout, no paper rows); with intervals, paired differences and cost. "
             "Default: the method x task pivots.")] = None,
    reference: Annotated[bool, typer.Option(help="With --table: the paper's rows beside ours, and the difference.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 1000,
    allow_incomplete: Annotated[bool, typer.Option(
        help="Report the verified files of a run some of whose files fail verification (the notes say which).")] = False,
) -> None:
    """Top-1, top-5 and mean per-class recall per method x task, or a paper table, from the runs'
    Parquet files only. Names the runs read; runs that measured the same samples are shown side by
    side, never pooled."""
    from harness.report.inputs import read_report_input
    from harness.report.render import FORMATS, render_table
    from harness.report.render_paper import PAPER_FORMATS
    from harness.report.tables import TABLES

    if table is None:
        renderer = FORMATS.get(format)
    else:
        TABLES.get(table), PAPER_FORMATS.get(format)  # unknown names fail before any file is read
    read = read_report_input(list(dict.fromkeys(run_dirs or [])), out_root, allow_incomplete)
    if table is None:
        typer.echo(renderer(read.rows, seed, resamples))
        for note in read.notes:
            typer.echo(f"note: {note}", err=True)
    else:
        typer.echo(render_table(read.rows, table, format, reference, seed, resamples, read.notes))


for module in (figures, imagenet_c, listing, teacher):
    module.register(app)


def _plan_command() -> Callable[..., None]:
    """`apm-bench plan`: `run` with every option of its own, as a dry run (one definition of the options)."""

    @functools.wraps(run)
    def plan(**options: object) -> None:
        run(**{**options, "dry_run": True})

    signature = inspect.signature(run)
    plan.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "dry_run"])
    plan.__doc__ = ("Plan a run without running it: per task the samples, shards and rows, per method the "
                    "device-hours (from an earlier run's seconds per sample, or FLOPs and --device-tflops). "
                    "Takes run's options; loads no model and writes nothing.")
    return plan


app.command("plan")(_plan_command())


def _stop(message: str, code: int) -> None:
    """Leave at once after an interrupt: what was finished is on disk and Ray is shut down, while the
    interpreter's own teardown (torch and Ray threads stopped mid-work) has been seen to crash."""
    typer.echo(message, err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console entry point: user errors become one line on stderr each and a non-zero exit, never a
    traceback; Ctrl-C and SIGTERM stop cleanly with exit code 130 whenever they arrive."""
    from harness import interrupts

    interrupts.install()
    logging.getLogger().setLevel(logging.ERROR)
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:
        _stop(str(exc), exc.exit_code)
    except HarnessError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # while the parser ran: no command had started
        _stop(INTERRUPTED, 130)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # a bug, not a usage error: keep the traceback
            raise
        # usage errors of the command-line parser (typer's own click): one line, not a panel
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "apm-bench"
        if exc.format_message():  # empty when the parser has just printed the help
            typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
