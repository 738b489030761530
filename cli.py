"""apm-bench: `run` a suite on Ray workers, `report` the Parquet it wrote, `ls` what exists."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.config import ApmConfig, DataConfig, ExecConfig, RunConfig, TeacherConfig, TptConfig
from harness.errors import HarnessError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Test-time-training benchmarks for CLIP teachers (APM, zero-shot, ensemble) on Ray.")

APM_FLAGS = "APM (defaults: docs/apm-method.md)"
TPT_FLAGS = "TPT (defaults: TPT's published protocol)"
DATA_FLAGS = "Data"
DataRoot = Annotated[
    Optional[Path],
    typer.Option(envvar="APM_BENCH_DATA", rich_help_panel=DATA_FLAGS, help="Folder holding the datasets."),
]


def _split(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeatable and comma-separated both work: --method zeroshot --method apm, or --method zeroshot,apm."""
    if not values:
        return None
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _hidden(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise HarnessError(f"--apm-hidden expects comma-separated integers, got '{text}'") from None
    if not widths or min(widths) < 1:
        raise HarnessError(f"--apm-hidden expects positive widths, got '{text}'")
    return widths


@app.command()
def run(
    suite: Annotated[Optional[str], typer.Option(help="Named suite (see `apm-bench ls`).")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Task spec, repeatable: synthetic, imagefolder:PATH.")] = None,
    method: Annotated[Optional[list[str]], typer.Option(help="Method, repeatable: zeroshot, ensemble, apm.")] = None,
    model: Annotated[Optional[str], typer.Option(help="open_clip architecture, e.g. ViT-B-16, or apm-tiny.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Tag, hf-hub:ORG/REPO, checkpoint file/dir, or none.")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or fp16 / bf16 autocast on GPU (scoring stays fp32).")] = "fp32",
    seed: Annotated[int, typer.Option(help="Run seed; per-sample seeds derive from it.")] = 0,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 16,
    workers: Annotated[Optional[int], typer.Option(min=1, help="CPU actors (without GPUs).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per CPU actor.")] = 1,
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
    source: Annotated[str, typer.Option(help="disk or hub.", rich_help_panel=DATA_FLAGS)] = "disk",
    corruptions: Annotated[str, typer.Option(help="ImageNet-C: released or generated.", rich_help_panel=DATA_FLAGS)] = "released",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Samples per task (stratified, seeded).", rich_help_panel=DATA_FLAGS)] = None,
    splits_dir: Annotated[Optional[Path], typer.Option(help="Where CoOp split files are.", rich_help_panel=DATA_FLAGS)] = None,
    hub_revision: Annotated[Optional[str], typer.Option(help="Pin the hub revision.", rich_help_panel=DATA_FLAGS)] = None,
    skip_missing: Annotated[bool, typer.Option(help="Run the tasks whose data is found.", rich_help_panel=DATA_FLAGS)] = False,
    exif_transpose: Annotated[bool, typer.Option(
        help="Turn images upright by their EXIF tag (off: pixels as stored, as the reference loaders).",
        rich_help_panel=DATA_FLAGS)] = False,
    apm_recipe: Annotated[Optional[str], typer.Option(help="spec (the paper) or demo (the authors' demo code)", rich_help_panel=APM_FLAGS)] = None,
    apm_image_size: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_patch_size: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_hidden: Annotated[Optional[str], typer.Option(help="e.g. 4096,2048,1024", rich_help_panel=APM_FLAGS)] = None,
    apm_pooling: Annotated[Optional[str], typer.Option(help="attention or mean", rich_help_panel=APM_FLAGS)] = None,
    apm_heads: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_steps: Annotated[Optional[int], typer.Option(min=0, rich_help_panel=APM_FLAGS)] = None,
    apm_lr: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel=APM_FLAGS)] = None,
    apm_copies: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_init_std: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel=APM_FLAGS)] = None,
    apm_chunk_size: Annotated[Optional[int], typer.Option(min=0, rich_help_panel=APM_FLAGS)] = None,
    apm_rgb_weight: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel=APM_FLAGS)] = None,
    apm_use_patch: Annotated[Optional[bool], typer.Option(rich_help_panel=APM_FLAGS)] = None,
    apm_templates: Annotated[Optional[str], typer.Option(help="ensemble or single", rich_help_panel=APM_FLAGS)] = None,
    apm_batch_size: Annotated[Optional[int], typer.Option(min=0, help="Samples trained at once; 0 fits the device.", rich_help_panel=APM_FLAGS)] = None,
    tpt_views: Annotated[int, typer.Option(min=2, rich_help_panel=TPT_FLAGS)] = 64,
    tpt_top: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of views kept.", rich_help_panel=TPT_FLAGS)] = 0.1,
    tpt_steps: Annotated[int, typer.Option(min=0, rich_help_panel=TPT_FLAGS)] = 1,
    tpt_lr: Annotated[float, typer.Option(min=0.0, rich_help_panel=TPT_FLAGS)] = 5e-3,
    tpt_weight_decay: Annotated[float, typer.Option(min=0.0, rich_help_panel=TPT_FLAGS)] = 0.01,
    tpt_ctx_init: Annotated[str, typer.Option(rich_help_panel=TPT_FLAGS)] = "a photo of a",
    tpt_augmix: Annotated[str, typer.Option(help="auto, on or off", rich_help_panel=TPT_FLAGS)] = "auto",
    tpt_min_scale: Annotated[float, typer.Option(min=0.0, max=1.0, rich_help_panel=TPT_FLAGS)] = 0.08,
) -> None:
    """Evaluate methods on tasks; writes results/<run-id>/ (manifest + one Parquet file per shard)."""
    from harness.engine.runner import resume_config
    from harness.engine.runner import run as run_engine
    from harness.models.ttt import RECIPES
    from harness.precision import check_precision
    from tasks.registry import SUITES

    if resume is not None:
        if suite or task or method:
            raise HarnessError("--resume takes tasks, methods and settings from the run's manifest; drop --suite/--task/--method")
        out_root, run_id = resume.parent, resume.name
    chosen = SUITES.get(suite) if suite else None
    apm_overrides = dict(chosen.apm) if chosen else {}
    flags = {
        "image_size": apm_image_size, "patch_size": apm_patch_size, "hidden": _hidden(apm_hidden),
        "pooling": apm_pooling, "heads": apm_heads, "steps": apm_steps, "lr": apm_lr, "copies": apm_copies,
        "init_std": apm_init_std, "chunk_size": apm_chunk_size, "rgb_weight": apm_rgb_weight,
        "use_patch": apm_use_patch, "templates": apm_templates, "batch_size": apm_batch_size, "recipe": apm_recipe,
    }
    apm_overrides.update({k: v for k, v in flags.items() if v is not None})
    if apm_overrides.get("templates", "ensemble") not in ("ensemble", "single"):
        raise HarnessError(f"--apm-templates must be ensemble or single, not '{apm_overrides['templates']}'")
    check_precision(precision)
    RECIPES.get(apm_overrides.get("recipe", "spec"))
    if tpt_augmix not in ("auto", "on", "off"):
        raise HarnessError(f"--tpt-augmix must be auto, on or off, not '{tpt_augmix}'")
    if corruptions not in ("released", "generated"):
        raise HarnessError(f"--corruptions must be released or generated, not '{corruptions}'")
    if device not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"--device must be auto, cpu or cuda, not '{device}'")
    config = resume_config(resume) if resume is not None else RunConfig(
        tasks=_split(task) or (chosen.tasks if chosen else ()),
        methods=_split(method) or (chosen.methods if chosen else ()),
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
        str(out_root), run_id, address, workers, device, threads, progress,
        data_root=str(data_root) if data_root else None,
        splits_dir=str(splits_dir) if splits_dir else None,
        skip_missing=skip_missing,
        force_new=force_new,
        max_attempts=max_attempts,
        max_restarts=max_restarts,
    )
    summary = run_engine(config, execution)
    typer.echo(
        f"{summary.run_dir}: {summary.shards_done}/{summary.shards_total} shards, {summary.samples} samples, "
        f"{summary.rows_written} rows written, {summary.errors} error rows"
    )
    if summary.failed:
        for shard_id, reason in summary.failed.items():
            typer.echo(f"failed shard {shard_id}: {reason}", err=True)
        typer.echo(f"error: {len(summary.failed)} shard(s) failed; retry them with: apm-bench run --resume {summary.run_dir}", err=True)
        raise typer.Exit(3)
    typer.echo(f"next: apm-bench report {summary.run_dir} --format markdown")


@app.command()
def report(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories; default the newest.")] = None,
    format: Annotated[str, typer.Option("--format", help="markdown, latex, csv, html or json.")] = "markdown",
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    table: Annotated[Optional[str], typer.Option(
        help="A paper layout: natural-shift (Table 1), imagenet-c (Table 2), fine-grained (Table 3); "
             "with intervals, paired differences and cost. Default: the plain method x task pivot.")] = None,
    reference: Annotated[bool, typer.Option(help="With --table: the paper's rows beside ours, and the difference.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 1000,
) -> None:
    """Accuracy (with n) per method x task, read from the runs' Parquet files only."""
    from harness import store
    from harness.report.render import FORMATS, render_table
    from harness.report.render_paper import PAPER_FORMATS
    from harness.report.tables import TABLES

    if table is None:
        renderer = FORMATS.get(format)
    else:
        TABLES.get(table), PAPER_FORMATS.get(format)  # unknown names fail before any file is read
    dirs = list(run_dirs) if run_dirs else [store.latest_run(out_root)]
    rows = store.read_rows(dirs)
    if table is None:
        typer.echo(renderer(rows))
    else:
        typer.echo(render_table(rows, table, format, reference, seed, resamples))


@app.command()
def plot(
    targets: Annotated[Optional[list[str]], typer.Argument(
        metavar="[RUN_DIR]... | islands IMAGE",
        help="Run directories (default the newest): accuracy vs seconds and TTT loss PNGs. "
             "Or `islands IMAGE`: APM's per-location features in colour at several TTT steps.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder (or .png for islands). Default RUN_DIR/figures, or figures/ for islands.")] = None,
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    model: Annotated[str, typer.Option(help="islands: teacher architecture.")] = "apm-tiny",
    pretrained: Annotated[str, typer.Option(help="islands: teacher weights.")] = "none",
    iterations: Annotated[str, typer.Option(help="islands: TTT steps to show, comma-separated.")] = "0,1,5,20",
    seed: Annotated[int, typer.Option(help="islands: seed of the APM draw.")] = 0,
    device: Annotated[str, typer.Option(help="islands: auto, cpu or cuda.")] = "auto",
    apm_image_size: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_patch_size: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=APM_FLAGS)] = None,
    apm_hidden: Annotated[Optional[str], typer.Option(help="e.g. 4096,2048,1024", rich_help_panel=APM_FLAGS)] = None,
    apm_lr: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel=APM_FLAGS)] = None,
    apm_pooling: Annotated[Optional[str], typer.Option(help="attention or mean", rich_help_panel=APM_FLAGS)] = None,
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
        flags = {"image_size": apm_image_size, "patch_size": apm_patch_size, "hidden": _hidden(apm_hidden),
                 "lr": apm_lr, "pooling": apm_pooling}
        apm = dataclasses.replace(ApmConfig(), **{k: v for k, v in flags.items() if v is not None})
        path = plot_islands(Path(targets[1]), out or Path("figures"), TeacherConfig(model=model, pretrained=pretrained),
                            apm, steps, seed, device)
        typer.echo(str(path))
        return
    from harness import store
    from harness.report.figures import run_figures

    dirs = [Path(t) for t in targets] or [store.latest_run(out_root)]
    for path in run_figures(store.read_rows(dirs), out or dirs[0] / "figures"):
        typer.echo(str(path))


@app.command("ls")
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
        for spec in family.examples or ((name,) if family.layouts else ()):
            try:
                task = resolve_task(spec, data_root=str(data_root) if data_root else None)
                found = f"found {len(task.samples())} samples, {len(task.classnames)} classes"
            except HarnessError:
                found = "not found" if data_root else "no data root"
            typer.echo(f"  {'':<16} {spec}: {found}")
    typer.echo("methods: " + ", ".join(METHODS.names()))


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


teacher_app = typer.Typer(no_args_is_help=True, help="Train the harness's own tiny CLIP teachers.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("train")
def teacher_train(
    out: Annotated[Path, typer.Option(help="Folder to write (open_clip_config.json + open_clip_model.safetensors).")],
    data: Annotated[Optional[list[str]], typer.Option(help="synthetic and/or fashion-mnist (repeatable); default synthetic.")] = None,
    model: Annotated[str, typer.Option(help="open_clip config to train from random init.")] = "apm-mini",
    steps: Annotated[int, typer.Option(min=1)] = 400,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 2e-3,
    seed: Annotated[int, typer.Option(help="Initialisation, training images and batches.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 2,
    dtype: Annotated[str, typer.Option(help="Stored weights: fp32 or fp16.")] = "fp32",
    fashion_root: Annotated[Optional[Path], typer.Option(help="Fashion-MNIST folder (default: the Debian package's).", rich_help_panel=DATA_FLAGS)] = None,
    eval_limit: Annotated[int, typer.Option(min=0, help="Test samples per task for the final zero-shot check (0: skip).")] = 1000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a tiny CLIP contrastively on class-name captions; `--pretrained OUT` then loads it."""
    from harness.models.teacher import load_teacher
    from harness.models.train_teacher import TrainConfig, train, zero_shot_accuracy
    from tasks.registry import resolve_task

    cfg = TrainConfig(model=model, data=_split(data) or ("synthetic",), steps=steps, batch_size=batch_size, lr=lr,
                      seed=seed, threads=threads, dtype=dtype, fashion_root=str(fashion_root) if fashion_root else None)
    _, meta = train(cfg, out, progress=progress)
    typer.echo(f"{out}: {meta['images']} images, {steps} steps, {meta['seconds_total']:.0f} s, loss {meta['loss_last']:.3f}")
    if eval_limit:
        teacher = load_teacher(TeacherConfig(model=model, pretrained=str(out)))
        for name in cfg.data:
            task = resolve_task("synthetic:25" if name == "synthetic" else f"fashion-mnist:{meta['data_roots'][name]}")
            acc = zero_shot_accuracy(teacher, task, eval_limit)
            typer.echo(f"zero-shot top-1 on {task.name} ({min(eval_limit, len(task.samples()))} test images): {100 * acc:.1f}%")
    typer.echo(f"use it: apm-bench run --model {model} --pretrained {out} ...")


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    logging.getLogger().setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _terminate)  # a scheduler's SIGTERM stops as cleanly as Ctrl-C
    try:
        code = app(standalone_mode=False)
    except HarnessError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted; finished shards are kept", err=True)
        sys.exit(130)
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
