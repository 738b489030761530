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
    cli_main()
