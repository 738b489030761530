"""What every command shares: Ctrl-C handling, list parsing, the data-root option, and `echo`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from harness.errors import Interrupted
from harness.text import terminal_safe

INTERRUPTED = "interrupted; nothing was written"
C = TypeVar("C", bound=Callable[..., None])

DataRoot = Annotated[
    Optional[Path],
    typer.Option(envvar="APM_BENCH_DATA", help="Folder holding the datasets."),
]


def echo(message: object = "", err: bool = False, nl: bool = True) -> None:
    """typer.echo for every line the CLI prints: paths, task, method and class names may hold ANSI
    escapes, which are shown as text (harness.text.terminal_safe) instead of reaching the terminal."""
    typer.echo(terminal_safe(str(message)), err=err, nl=nl)


def interruptible(command: C) -> C:
    """Ctrl-C inside a command becomes one line and exit 130 (click would print a blank line and
    "Aborted!"); a run that has written shards says what it kept (harness.engine.runner)."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def split_values(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeatable and comma-separated both work: --method zeroshot --method apm, or --method zeroshot,apm."""
    if not values:
        return None
    return tuple(dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip()))  # each once
