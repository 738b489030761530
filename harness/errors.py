"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class HarnessError(Exception):
    """A user-facing problem: bad flag, missing data, unknown name. The message is one line."""

    exit_code = 2


class MissingData(HarnessError):
    """A task's data is not where it looks. The only error `--skip-missing` skips: a misspelt task
    or a bad parameter still stops the run."""
