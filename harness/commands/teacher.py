"""`apm-bench teacher train`: the harness's own tiny CLIP teachers, trained here (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.commands.common import echo, interruptible, split_values
from harness.config import TeacherConfig


@interruptible
def teacher_train(
    data: Annotated[Optional[list[str]], typer.Option(help="synthetic and/or fashion-mnist (repeatable); default synthetic.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder to write (open_clip config + safetensors weights). Default: $APM_BENCH_HOME/teachers/<data> "
             "(~/.apm-bench/teachers/...), where the fashion-mnist-c suite looks for its teacher.")] = None,
    model: Annotated[str, typer.Option(help="open_clip config to train from random init.")] = "apm-mini",
    steps: Annotated[int, typer.Option(min=1)] = 400,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 2e-3,
    seed: Annotated[int, typer.Option(help="Initialisation, training images and batches.")] = 0,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="torch threads; default the CPUs other processes leave free (1 on a busy machine, where more "
                    "threads wait for each other).")] = None,
    dtype: Annotated[str, typer.Option(help="Stored weights: fp32 or fp16.")] = "fp32",
    fashion_root: Annotated[Optional[Path], typer.Option(help="Fashion-MNIST folder (default: the Debian package's).")] = None,
    eval_limit: Annotated[int, typer.Option(min=0, help="Test samples per task for the final zero-shot check (0: skip).")] = 1000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a tiny CLIP contrastively on class-name captions; `--pretrained OUT` then loads it."""
    from harness.cpus import free_threads
    from harness.models.sources import TRAINED_TEACHERS, teacher_home, trained_teacher_dir

    if threads is None:
        threads, why = free_threads()
        echo(f"torch threads: {threads} ({why}; --threads N to choose)", err=True)
    from harness.models.teacher import load_teacher
    from harness.models.train_teacher import TrainConfig, train, zero_shot_accuracy
    from tasks.registry import resolve_task

    cfg = TrainConfig(model=model, data=split_values(data) or ("synthetic",), steps=steps, batch_size=batch_size, lr=lr,
                      seed=seed, threads=threads, dtype=dtype, fashion_root=str(fashion_root) if fashion_root else None)
    out = out or teacher_home() / "-".join(cfg.data)
    _, meta = train(cfg, out, progress=progress)
    echo(f"{out}: {meta['images']} images, {steps} steps, {meta['seconds_total']:.0f} s, loss {meta['loss_last']:.3f}")
    if eval_limit:
        teacher = load_teacher(TeacherConfig(model=model, pretrained=str(out)))
        for name in cfg.data:
            task = resolve_task("synthetic:25" if name == "synthetic" else f"fashion-mnist:{meta['data_roots'][name]}")
            acc = zero_shot_accuracy(teacher, task, eval_limit)
            echo(f"zero-shot top-1 on {task.name} ({min(eval_limit, len(task.samples()))} test images): {100 * acc:.1f}%")
    named = {trained_teacher_dir(name): name for name in TRAINED_TEACHERS}.get(Path(out).expanduser().absolute())
    echo(f"use it: apm-bench run --model {model} --pretrained {named or out} ..."
         + (" (the fashion-mnist-c suite finds it there)" if named == "fashion-mnist-teacher" else ""))


def register(app: typer.Typer) -> None:
    teacher_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                              help="Train the harness's own tiny CLIP teachers.")
    teacher_app.command("train")(teacher_train)
    app.add_typer(teacher_app, name="teacher")
