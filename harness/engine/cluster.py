"""The Ray cluster a run uses: a local instance bound to the loopback address, or an existing cluster
joined at --address. Nothing here knows about shards or rows.

A local instance is private to the user who starts it: its token is a 0600 file under
$APM_BENCH_HOME (Ray's own ~/.ray/auth_token takes the umask's mode, 0644 on most machines, and
whoever reads it can join the cluster and run code as this user), and its session files (logs, unix
sockets) lie in a 0700 folder (Ray makes its temp folders 0777)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import math
import os
import secrets
import signal
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from harness import interrupts
from harness.config import ExecConfig
from harness.errors import HarnessError

TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
PROBE_SECONDS = 5.0
"""How long --address may take to accept a TCP connection before the run stops with one line."""
SOCKET_PATH_MAX = 107
"""Characters of a unix socket's path on Linux (sun_path holds 108 bytes with the final NUL)."""
JOIN_ATTEMPTS = "2"
"""Ray's GCS connection attempts when joining (RAY_gcs_server_port_wait_time_s). Each takes about
40 s on a gRPC server that is not a GCS; Ray's default 20 is for a head still starting, while the
probe before it has already seen this one answer."""
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""What a gRPC client sends first (the HTTP/2 preface and an empty SETTINGS frame); a gRPC server,
as Ray's GCS and client server are, answers with a SETTINGS frame of its own."""


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
        _token_mode()
    # Ray's C++ core otherwise prints a stack dump on SIGTERM before our handler stops the run cleanly
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray

    if ray.is_initialized():
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    own_token = not execution.address and _use_private_token()
    try:
        try:
            if execution.address:
                _join(ray, execution.address)
            else:
                # the machine's CPUs, not --workers x --threads: the pool is then capped at what fits
                # (and says so) instead of starting an actor per shard on two cores
                per_worker = math.ceil(execution.cpus_per_worker or execution.threads_per_worker)
                ray.init(
                    address="local",
                    num_cpus=max(os.cpu_count() or 1, per_worker),
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    _temp_dir=str(private_temp_dir()),
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
            if own_token:  # a later --address join in this process uses the user's own token
                _forget_token()


def _token_mode() -> None:
    """Token auth for a local instance: Ray's default, said explicitly. Ray reads the mode into its
    config when it is first imported, so a process that imported it before (a test session, a
    notebook) has that config refreshed, as Ray's own default does; else the driver would send no
    token to a GCS that wants one."""
    if os.environ.get("RAY_AUTH_MODE") is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray._raylet" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")


def _use_private_token() -> bool:
    """Point Ray at the harness's own token unless the user gave one (RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH) or turned token auth off; the raylet and the workers inherit the variable."""
    if os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_PATH_ENV) or os.environ.get("RAY_AUTH_MODE") != "token":
        return False
    os.environ[TOKEN_PATH_ENV] = str(private_token())
    return True


def _forget_token() -> None:
    os.environ.pop(TOKEN_PATH_ENV, None)
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()  # Ray caches the token it read


def token_path() -> Path:
    from harness.models.sources import home

    return home() / "ray" / "auth_token"


def private_token() -> Path:
    """$APM_BENCH_HOME/ray/auth_token: 64 hex characters, 0600 in a 0700 folder, made once and kept:
    another run of this user may be live with it, and its new workers read the file. An existing file
    must be this user's regular file; a wider mode is narrowed."""
    path = token_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _own(path.parent, "folder", 0o700)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        with os.fdopen(fd, "r+") as file:
            _own(path, "file", 0o600, os.fstat(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)  # two first runs at once write one token, not one each
            if not file.read().strip():  # new, or left empty by an interrupted first run
                file.seek(0)
                file.truncate()
                file.write(secrets.token_hex(32))
    except OSError as exc:
        raise HarnessError(f"cannot keep the local Ray cluster's token at {path}: {exc.strerror or exc}") from None
    return path


def private_temp_dir() -> Path:
    """Where the local instance keeps its session folders: <RAY_TMPDIR or /tmp>/apm-bench-ray-<uid>/ray.
    Ray makes that last folder 0777; its parent is this user's and 0700, so no other user reaches the
    logs or the unix sockets. A short path: Ray's socket paths must stay under 107 characters."""
    base = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / f"apm-bench-ray-{os.getuid()}"
    longest = len(f"{base}/ray/session_2000-01-01_00-00-00_000000_{4194304}/sockets/plasma_store")
    if longest > SOCKET_PATH_MAX:
        raise HarnessError(f"RAY_TMPDIR {os.environ.get('RAY_TMPDIR')} is too long a path: Ray's unix sockets under it "
                           f"would take {longest} characters, more than the {SOCKET_PATH_MAX} Linux allows")
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        _own(base, "folder", 0o700)
    except OSError as exc:
        raise HarnessError(f"cannot make the local Ray cluster's folder {base}: {exc.strerror or exc}") from None
    return base / "ray"


def _own(path: Path, kind: str, mode: int, info: os.stat_result | None = None) -> None:
    """`path` must be this user's own file or folder (not a symlink another user could have planted);
    group and other permissions are removed."""
    info = info or os.lstat(path)
    wanted = stat.S_ISREG if kind == "file" else stat.S_ISDIR
    if not wanted(info.st_mode) or info.st_uid != os.getuid():
        raise HarnessError(f"{path} is not a {kind} of this user's (a symlink, another kind of file, or another "
                           f"user's): the local Ray cluster would not be private; remove it and run again")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, mode)


def _probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """--address (or ray://host:port) must accept a TCP connection and answer as a gRPC server before
    ray.init is called: it would retry for 100 s where nothing listens, and for 40 s a try on a port
    that is not Ray's (the dashboard's 8265, say)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # `auto`, or no port: Ray resolves it and says what is wrong
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS server waits for a handshake, not for HTTP/2
            try:
                conn.sendall(HTTP2_PREFACE)
                header = conn.recv(9)
            except OSError:  # silent, or hung up on the preface
                header = b""
    except ConnectionRefusedError:
        why = "nothing listens there (connection refused)"
    except TimeoutError:
        why = f"no answer within {seconds:g} s"
    except socket.gaierror as exc:
        why = f"unknown host ({exc.strerror})"
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        if len(header) >= 4 and header[3] == 4:  # the frame type of SETTINGS
            return
        why = ("something listens there but it is not a Ray cluster (no gRPC answer); a head node's GCS "
               "listens on port 6379 unless it was started with another --port, Ray Client on ray://HOST:10001")
    raise HarnessError(f"cannot join the Ray cluster at --address {address}: {why}")


def _join(ray, address: str) -> None:  # noqa: ANN001 - the ray module, imported by the caller
    _probe(address)
    wait = "RAY_gcs_server_port_wait_time_s"
    given = os.environ.get(wait)
    os.environ.setdefault(wait, JOIN_ATTEMPTS)  # read in ray.init; a local start later waits Ray's own time
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        cause = exc.__cause__ or exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1][:300]
        raise HarnessError(
            f"cannot join the Ray cluster at --address {address}: {first} "
            "(a cluster with token auth needs RAY_AUTH_MODE=token and its token)"
        ) from None
    finally:
        if given is None:
            os.environ.pop(wait, None)
