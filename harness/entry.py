"""The `apm-bench` console script. Its first act is to take over Ctrl-C and SIGTERM: until the
command's own handling is in place (cli.main), a signal ends the process with one line and exit code
130, never a traceback from the middle of an import. Nothing has been written by then."""

from __future__ import annotations

import os
import signal
import sys


def _before_start(signum: int, frame: object) -> None:
    sys.stderr.write("interrupted before anything started; nothing was written\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _before_start)
    signal.signal(signal.SIGTERM, _before_start)
    from harness.errors import HarnessError
    from harness.text import terminal_safe

    try:
        from cli import main as cli_main  # its help lists the methods and tasks, plugins' included
    except HarnessError as exc:  # a plugin that cannot be loaded: one line naming it
        sys.stderr.write(f"error: {terminal_safe(str(exc))}\n")
        sys.exit(exc.exit_code)
    try:
        cli_main()
    except SystemExit as exc:
        _leave(exc.code)


def _leave(code: object) -> None:
    """The command is done: leave now, signals ignored. The interpreter's teardown would run Ray's exit
    hooks, which put SIGTERM back to its default: a signal then killed a run that had finished (143)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
