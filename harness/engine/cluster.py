"""The Ray cluster a run uses: a local instance bound to the loopback address, or an existing cluster
joined at --address. Nothing here knows about shards or rows."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Iterator

from harness import interrupts
from harness.config import ExecConfig
from harness.errors import HarnessError


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def ray_session(execution: ExecConfig) -> Iterator[None]:
    """Join the cluster at --address, reuse one already initialised, or start a local one on 127.0.0.1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not execution.address or _is_loopback(execution.address):
        # read when ray is imported: a local instance then binds every service to the loopback
        # address, and a driver joining a loopback cluster does not swap 127.0.0.1 for a public IP
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not execution.address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for local instances, said explicitly
    # Ray's C++ core otherwise prints a stack dump on SIGTERM before our handler stops the run cleanly
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray

    if ray.is_initialized():
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        try:
            if execution.address:
                _join(ray, execution.address)
            else:
                cpus = max(os.cpu_count() or 1, (execution.workers or 1) * execution.threads_per_worker)
                ray.init(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        except SystemExit as exc:  # SIGTERM met the handler ray.init installs (sys.exit(signum)) before ours was back
            if exc.code != signal.SIGTERM:
                raise
            raise KeyboardInterrupt from None
        interrupts.install()  # ray.init put its own SIGTERM handler in, which aborts the process
        interrupts.check()  # a signal that came while Ray started
        yield
    finally:
        try:
            with interrupts.deferred():  # also after an interrupt inside ray.init: no Ray process left behind
                ray.shutdown()
        finally:
            for sig, handler in previous.items():  # the caller's handlers, once Ray is down
                signal.signal(sig, handler)


def _join(ray, address: str) -> None:  # noqa: ANN001 - the ray module, imported by the caller
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        cause = exc.__cause__ or exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1][:300]
        raise HarnessError(
            f"cannot join the Ray cluster at --address {address}: {first} "
            "(a cluster with token auth needs RAY_AUTH_MODE=token and its token)"
        ) from None
