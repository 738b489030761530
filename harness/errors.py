"""The exception types the CLI turns into one-line messages instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class HarnessError(Exception):
    """A user-facing problem: bad flag, missing data, unknown name. The message is one line."""

    exit_code = 2


class MissingData(HarnessError):
    """A task's data is not where it looks. The only error `--skip-missing` skips: a misspelt task
    or a bad parameter still stops the run."""


class Problems(HarnessError):
    """Every problem found while checking a command's arguments and data, reported together (one line
    each) so a user fixes them in one go instead of one rerun per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Interrupted(HarnessError):
    """Ctrl-C or SIGTERM: what was finished is on disk, nothing half-written; the message says what was
    kept and how to resume."""

    exit_code = 130


def collect(problems: list[str], check: Callable[..., T], *args: object) -> T | None:
    """`check(*args)`, with a HarnessError noted in `problems` instead of raised (None returned)."""
    try:
        return check(*args)
    except HarnessError as exc:
        problems.append(str(exc))
        return None


class StorageError(HarnessError):
    """Results could not be written (a full disk, a lost mount): the message says what, what is kept,
    and how to go on."""

    exit_code = 1
