"""Ctrl-C and SIGTERM stop a run whenever they arrive.

Python turns SIGINT into a KeyboardInterrupt at whatever line runs next, and some places swallow it:
an exception raised inside logging's fork handler (Ray forks while it starts) is printed as "Exception
ignored" and the run goes on. So the handler also records the signal, and the driver checks that
record at its checkpoints (start-up steps, every second of the dispatch loop): a swallowed interrupt
stops the run at the next one. After the first, further signals are only recorded, so the clean-up
that follows (killing actors, removing an empty run directory) is not cut short."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received: list[int] = []
_state = {"raised": False, "deferring": False}


def _handler(signum: int, frame: object) -> None:
    _received.append(signum)
    if not _state["raised"] and not _state["deferring"]:
        _state["raised"] = True
        raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM to the handler (main thread only; Ray's init replaces SIGTERM's, so
    the runner installs it again once Ray is up)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stretch no signal may cut short (shutting Ray down, writing a file and renaming it): a signal
    that comes meanwhile is raised as KeyboardInterrupt once the outermost stretch is over."""
    outer = _state["deferring"]
    _state["deferring"] = True
    try:
        yield
    finally:
        _state["deferring"] = outer
    if not outer and _received and not _state["raised"]:
        _state["raised"] = True
        raise KeyboardInterrupt


def settle() -> None:
    """The work a signal would stop is done (a run that wrote all its files): from here on a signal is
    only recorded, so the summary is printed and the process exits 0 instead of dying half-way (Ray's
    shutdown may leave SIGTERM at its default, which kills with 143) or saying nothing was written."""
    _state["raised"] = True
    install()


def rearm() -> None:
    """Signals stop work again (the next run of `run --seeds`); one that came meanwhile stops it at once."""
    _state["raised"] = False
    install()
    check()


def check() -> None:
    """A checkpoint: raise KeyboardInterrupt if a signal came (even one whose exception was swallowed)."""
    if _received:
        raise KeyboardInterrupt

