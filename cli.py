"""apm-bench: `run` a suite on Ray workers, `report` the Parquet it wrote, `ls` what exists."""

from __future__ import annotations

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
from harness.commands.common import INTERRUPTED, DataRoot, echo, interruptible, split_values
from harness.commands.run_file import read_settings_tables, use_run_file
from harness.attack_config import AttackConfig
from harness.config import DataConfig, ExecConfig, RunConfig, TeacherConfig
from harness import interrupts
from harness.errors import HarnessError, Interrupted, collect
from harness.methods import METHODS
from harness.text import terminal_safe
from tasks.registry import TASKS

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Test-time-training benchmarks for CLIP teachers (APM, TPT, zero-shot, ensemble) on Ray.")
METHOD_NAMES = ", ".join(METHODS.names())
TASK_NAMES = ", ".join(TASKS.names())


def run_seeds(options: dict, text: str) -> None:
    """`run --seeds 0,1,2`: the same run once per seed, the samples drawn with the first (subset_seed),
    each in its own run directory RUN_ID-seedS (RUN_ID default: seeds-<time>), then the report line
    that reads them together."""
    import datetime as dt

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise HarnessError(f"--seeds expects comma-separated integers such as 0,1,2, not '{text}'") from None
    if len(set(values)) < len(values):
        raise HarnessError(f"--seeds {text}: each seed once")
    if options["resume"] is not None or options["seed"] != 0:
        raise HarnessError("--seeds gives each run its seed: drop --seed" if options["seed"] != 0 else
                           "--seeds starts new runs: it cannot be combined with --resume")
    base = options["run_id"] or f"seeds-{dt.datetime.now():%Y%m%d-%H%M%S}"
    dirs = []
    for value in values:
        interrupts.rearm()  # a signal after the previous seed's run stops the loop here
        run_id = f"{base}-seed{value}"
        echo(f"seed {value}: run {run_id}", err=True)
        run(**{**options, "seed": value, "subset_seed": values[0], "run_id": run_id})
        dirs.append(str(Path(options["out_root"]) / run_id))
    if not options["dry_run"]:
        echo(f"next: apm-bench report {' '.join(dirs)} --table trust --format markdown")


def paired_tasks(problems: list[str], option: str) -> tuple[str, ...]:
    """`--ood ID:OOD` as the two task specs a run holds: ID, and OOD@ID (tasks.open_set)."""
    from tasks.open_set import SEPARATOR, ood_pair

    pair = collect(problems, ood_pair, option, set(TASKS.names()))
    return (pair[0], f"{pair[1]}{SEPARATOR}{pair[0]}") if pair else ()


@app.command()
@interruptible
def run(
    suite: Annotated[Optional[str], typer.Option(help="Named suite: smoke, natural-shift, imagenet-c, fine-grained, "
                                                       "fashion-mnist-c, ood-mcm (`apm-bench ls`).")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help=f"Task spec FAMILY[/PARAM...][:PATH], repeatable; families: {TASK_NAMES}.")] = None,
    method: Annotated[Optional[list[str]], typer.Option(help=f"Method, repeatable or comma-separated: {METHOD_NAMES}.")] = None,
    ood: Annotated[Optional[list[str]], typer.Option(
        metavar="ID_TASK:OOD_TASK", help="An out-of-distribution pairing, repeatable: OOD_TASK's images scored over "
        "ID_TASK's classes (adds both; e.g. imagenet:mcm-inaturalist); `apm-bench report --table trust`.")] = None,
    attack: Annotated[Optional[str], typer.Option(
        metavar="pgd[:eps=E,steps=N,step=S,target=prediction|label]",
        help="Attack every image before the teacher and the methods see it: PGD on the teacher's zero-shot "
             "prediction, R-TPT's eps=1/255, 7 steps of eps/4 by default; rows record it.")] = None,
    model: Annotated[Optional[str], typer.Option(help="open_clip architecture, e.g. ViT-B-16, or apm-tiny.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="open_clip tag, hf-hub:ORG/REPO, checkpoint file or directory, synthetic-teacher (shipped), "
             "fashion-mnist-teacher ($APM_BENCH_HOME/teachers/fashion-mnist), or none.")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or fp16 / bf16 autocast on GPU (scoring stays fp32).")] = "fp32",
    seed: Annotated[int, typer.Option(help="Run seed; per-sample seeds derive from it.")] = 0,
    seeds: Annotated[Optional[str], typer.Option(
        metavar="S1,S2,...", help="One run per seed (views, initialisations and streams differ; the samples are "
        "the first seed's), run ids RUN_ID-seedS; `report --table trust` shows each cell's spread over them.")] = None,
    subset_seed: Annotated[Optional[int], typer.Option(hidden=True)] = None,
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
    deterministic: Annotated[bool, typer.Option(
        help="Deterministic kernels (torch's deterministic algorithms, cuDNN without autotuning): equal rows "
             "run to run on one GPU model; part of the fingerprint.")] = False,
    allow_other_device: Annotated[bool, typer.Option(
        help="Let a resume run on another GPU model than the run was started on (rows may round differently).")] = False,
    exif_transpose: Annotated[bool, typer.Option(
        help="Turn images upright by their EXIF tag (off: pixels as stored, as the reference loaders).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="METHOD.FIELD=VALUE",
        help="A method setting, repeatable (e.g. tpt.steps=2, apm.hidden=256,128; *.views=16 for every method with "
             "views); `apm-bench ls methods` lists them.")] = None,
    config_file: Annotated[Optional[Path], typer.Option(
        "--config", is_eager=True, callback=use_run_file,
        help="A TOML file of run options (suite, task, method, model, limit, workers, ...) and one "
             "[METHOD] table of settings per method; flags given on the command line win.")] = None,
    stream: Annotated[str, typer.Option(
        help="Online methods' stream order: iid, dirichlet:GAMMA (StatA's label shift, e.g. 0.1), class-sequential, "
             "continual (the run's tasks in order, state carried); episodic methods ignore it.")] = "iid",
    streams: Annotated[int, typer.Option(min=1, help="Streams per task for online methods, seeds derived from --seed.")] = 1,
    feature_cache: Annotated[Optional[Path], typer.Option(
        help="Cache the teacher's image embeddings in this folder and read them back: N streams of an online "
             "method cost one pass of the image tower (part of the fingerprint; the folder is not).")] = None,
    checkpoint_seconds: Annotated[float, typer.Option(
        min=0.0, help="Seconds of a stream between checkpoints of the online methods' states (0: after every batch of --shard-size samples).")] = 60.0,
    dry_run: Annotated[bool, typer.Option(help="Only plan: samples, shards, rows and device-hours per method "
                                               "(as `apm-bench plan`); nothing runs, nothing is written.")] = False,
    device_tflops: Annotated[Optional[float], typer.Option(
        min=0.0, help="Plan: a device's peak TFLOP/s, for hours from FLOPs where no earlier run has the method.")] = None,
) -> None:
    """Evaluate methods on tasks; writes results/<run-id>/ (manifest + one Parquet file per shard).
    Every argument and every task's data is checked first, and all problems are reported at once."""
    if seeds is not None:
        options = {name: value for name, value in locals().items() if name != "seeds"}
        return run_seeds(options, seeds)
    from harness.config import DEVICES, PRECISIONS
    from harness.engine.prepare import check, missing_work, resume_config
    from harness import rundir
    from harness.errors import Problems
    from harness import settings
    from harness.streams import check_protocol
    from tasks.registry import SOURCES, SUITES

    problems: list[str] = []
    file_settings = read_settings_tables(config_file) if config_file is not None else {}

    def one_of(flag: str, value: object, choices: tuple[str, ...]) -> None:
        if value is not None and value not in choices:
            problems.append(f"--{flag} must be one of {', '.join(choices)}, not '{value}'")

    if resume is not None:
        if suite or task or ood or method or set_ or deterministic or attack:
            problems.append("--resume takes tasks, methods and settings from the run's manifest; "
                            "drop --suite/--task/--ood/--method/--set/--deterministic/--attack")
        if resume.name in ("", ".", ".."):  # `results/..`: the folder it means, by name
            resume = Path(os.path.abspath(resume))
        out_root, run_id = resume.parent, resume.name
    elif run_id is not None:
        collect(problems, rundir.run_path, out_root, run_id)
    chosen = collect(problems, SUITES.get, suite) if suite else None
    one_of("precision", precision, PRECISIONS)
    one_of("device", device, DEVICES)
    one_of("source", source, SOURCES)
    one_of("corruptions", corruptions, ("released", "generated"))
    methods = split_values(method) or (chosen.methods if chosen else ())
    if resume is None and (online := [m for m in methods if not settings.method_kind_episodic(m)]) \
            and "zeroshot" not in methods:
        methods = ("zeroshot", *methods)  # the reference every online method is read against, on the same samples
        echo(f"note: zeroshot added beside the online method(s) {', '.join(online)}", err=True)
    if collect(problems, check_protocol, stream) is None:
        stream = "iid"
    assignments = [parsed for text in set_ or [] if (parsed := collect(problems, settings.parse_assignment, text))]
    chosen_settings = {} if resume is not None else settings.resolve(
        methods, chosen.settings if chosen else {}, file_settings, f"--config {config_file}", assignments, problems)
    task_specs = (*(split_values(task) or (chosen.tasks if chosen else ())),
                  *(spec for option in ood or () for spec in paired_tasks(problems, option)))
    config = collect(problems, resume_config, resume) if resume is not None else RunConfig(
        tasks=tuple(dict.fromkeys(task_specs)),
        methods=methods,
        teacher=TeacherConfig(
            model=model or (chosen.model if chosen else "apm-tiny"),
            pretrained=pretrained or (chosen.pretrained if chosen else "none"),
            precision=precision,
        ),
        settings=tuple(chosen_settings.items()),
        data=DataConfig(source=source, corruptions=corruptions, limit=limit, hub_revision=hub_revision,
                        exif_transpose=exif_transpose),
        seed=seed,
        shard_size=shard_size,
        suite=suite,
        deterministic=deterministic,
        stream=stream,
        streams=streams,
        feature_cache=feature_cache is not None,
        attack=collect(problems, AttackConfig.parse, attack) if attack is not None else None,
        subset_seed=subset_seed,
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
        allow_other_device=allow_other_device,
        checkpoint_seconds=checkpoint_seconds,
        feature_cache_dir=str(feature_cache) if feature_cache else None,
    )
    tasks: list = []
    if config is not None:  # a plan prices a task whose data is absent from its published size
        config, tasks, found = check(config, execution, plan_missing=dry_run)
        if (suite and chosen is None) or (ood and not config.tasks):  # a misspelt suite or --ood: its tasks
            found = [p for p in found if p not in missing_work(config)]  # are not missing as well
        problems += found
    if problems:
        raise Problems(list(dict.fromkeys(problems)))  # an ID task named by two specs is one problem
    if dry_run:
        from harness.plan import cost_lines, render, task_lines, weight_lines

        lines = task_lines(config, tasks)
        runs = [p.parent for p in Path(out_root).glob("*/manifest.json")]
        echo(render(config, lines, cost_lines(config, lines, tasks, runs, device_tflops), weight_lines(config)))
        return
    from harness.engine.prepare import pin_weights

    config = pin_weights(config)  # weights found and hashed, or one line saying why not, before anything heavy
    from harness.estimate import estimate
    from harness.engine.runner import run as run_engine  # torch, open_clip, Ray: only for a run that can start

    for line in estimate(config, execution, tasks):  # what the run will be, before its first shard
        echo(line, err=True)
    summary = run_engine(config, execution, tasks)
    interrupts.settle()  # the run's files are all written: a signal now must not turn it into an error
    for line in summary.repaired:
        echo(f"set aside in quarantine/: {line}", err=True)
    if summary.rerun:
        echo(f"ran again the {summary.rerun} shard(s) only those files held", err=True)
    if summary.capped:
        echo(f"note: {summary.capped}", err=True)
    for line in summary.retired:
        echo(f"note: {line}", err=True)
    if summary.unplaced:
        echo(f"note: {summary.unplaced} worker(s) were never placed (the cluster's GPUs or CPUs were taken); "
             "the others ran every shard", err=True)
    echo(
        f"{summary.run_dir}: {summary.shards_done}/{summary.shards_total} {summary.units}, {summary.samples} samples, "
        f"{summary.rows_written} rows written, {summary.errors} error rows"
    )
    if summary.failed:
        for shard_id, reason in summary.failed.items():
            echo(f"failed shard {shard_id}: {reason}", err=True)
        echo(f"error: {len(summary.failed)} shard(s) failed; retry them with: apm-bench run --resume {summary.run_dir}", err=True)
        raise typer.Exit(3)
    if summary.rows_written and summary.errors == summary.rows_written:  # a wrong folder or weights, not bad images
        echo(f"error: every row this run wrote is an error row (the first: {summary.first_error})", err=True)
        raise typer.Exit(4)
    table = SUITES.get(config.suite).table if config.suite in SUITES else None  # a suite fills its paper table
    echo(f"next: apm-bench report {summary.run_dir}" + (f" --table {table}" if table else "") + " --format markdown")
    if table != "trust" and (config.attack is not None or any("@" in t for t in config.tasks)):  # OOD pairs, attacks
        echo(f"next: apm-bench report {summary.run_dir} --table trust --format markdown")


@app.command()
@interruptible
def report(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories; default the newest.")] = None,
    format: Annotated[str, typer.Option("--format", help="markdown, latex, csv, html or json.")] = "markdown",
    out_root: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("results"),
    table: Annotated[Optional[str], typer.Option(
        help="A paper layout: natural-shift (Table 1), imagenet-c (Table 2), fine-grained (Table 3), or "
             "fashion-mnist-c (Table 2's layout, no paper rows); with intervals, paired differences and cost; or "
             "trust: accuracy, ECE, OOD AUROC/FPR95/AUPR, robust accuracy and significance per method. "
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
    from harness.report.render import FORMATS, render, render_table
    from harness.report.render_paper import PAPER_FORMATS
    from harness.report.tables import TABLES
    from harness.registry import unknown_name_message
    from harness.report.trust import TRUST_TABLE, build_trust
    from harness.report.trust_render import TRUST_FORMATS

    if table is None:
        FORMATS.get(format)
    elif table == TRUST_TABLE:
        TRUST_FORMATS.get(format)
    elif table not in TABLES:  # unknown names fail before any file is read
        raise HarnessError(unknown_name_message("table (--table)", table, [*TABLES.names(), TRUST_TABLE]))
    else:
        PAPER_FORMATS.get(format)
    read = read_report_input(list(dict.fromkeys(run_dirs or [])), out_root, allow_incomplete)
    if format == "html":  # one page: the tables, and what only the runs have (figures, samples, provenance)
        from harness.report.page import html_report

        echo(html_report(read, table, reference, seed, resamples))
    elif table is None:  # an unfinished run is marked in the body of every format, not only here
        echo(render(read.rows, format, seed, resamples, read.progress, read.notes))
        for note in read.notes:
            echo(f"note: {note}", err=True)
    elif table == TRUST_TABLE:
        echo(TRUST_FORMATS.get(format)(build_trust(read.rows, seed, resamples, read.notes)))
    else:
        echo(render_table(read.rows, table, format, reference, seed, resamples, read.notes, read.progress))


for module in (figures, imagenet_c, listing, teacher):
    module.register(app)


def _plan_command() -> Callable[..., None]:
    """`apm-bench plan`: `run` with every option of its own, as a dry run (one definition of the options)."""

    @functools.wraps(run)
    def plan(**options: object) -> None:
        run(**{**options, "dry_run": True})

    signature = inspect.signature(run, eval_str=True)
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
    echo(message, err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console entry point: user errors become one line on stderr each and a non-zero exit, never a
    traceback; Ctrl-C and SIGTERM stop cleanly with exit code 130 whenever they arrive."""
    interrupts.install()
    logging.getLogger().setLevel(logging.ERROR)
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:
        _stop(str(exc), exc.exit_code)
    except HarnessError as exc:
        for line in terminal_safe(str(exc)).splitlines():  # escaped first: \x0c, \x1c, \x85 split lines too
            echo(f"error: {line}", err=True)
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
            echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
