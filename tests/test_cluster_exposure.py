"""What a local run leaves open to other users of the machine, and how it meets impossible requests:
its Ray token and session files are private, --workers is capped at what the cluster can place, and
an --address where no cluster answers fails at once with one line. Each run is a subprocess with its
own HOME, $APM_BENCH_HOME and RAY_TMPDIR, so nothing here reads or writes the user's own."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.engine import cluster
from harness.errors import HarnessError

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")

SESSION = """
import json, os, subprocess, sys
from pathlib import Path
from harness.config import ExecConfig
from harness.engine.cluster import ray_session

def join(gcs, token):  # another user of the machine: no access to our files, a token of their own
    env = {"PATH": os.environ["PATH"], "HOME": sys.argv[1], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_gcs_server_port_wait_time_s": "1"}
    code = f"import ray; ray.init(address={gcs!r}); print('joined')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout.strip()

with ray_session(ExecConfig(workers=1)):
    import ray
    node = ray._private.worker._global_node
    session = Path(node.get_session_dir_path())
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    in_worker = ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_TOKEN_PATH")).remote())
    print(json.dumps({"session": str(session), "token": str(token), "in_worker": in_worker,
                      "wrong": join(node.gcs_address, "0" * 64), "right": join(node.gcs_address, token.read_text())}))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture()
def short_tmp():
    """A RAY_TMPDIR under /tmp: pytest's own folders make Ray's socket paths too long."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(tmp_path: Path, short_tmp: Path) -> dict:
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(tmp_path / "home"), "APM_BENCH_HOME": str(tmp_path / "apm"),
            "RAY_TMPDIR": str(short_tmp), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


def test_the_local_cluster_keeps_its_token_and_session_files_to_this_user(tmp_path, short_tmp):
    done = subprocess.run([sys.executable, "-c", SESSION, str(tmp_path / "other")], env=_env(tmp_path, short_tmp),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    token = tmp_path / "apm" / "ray" / "auth_token"
    assert seen["token"] == seen["in_worker"] == str(token)  # the workers read the same file
    assert _mode(token) == 0o600 and _mode(token.parent) == 0o700
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0
    assert not (tmp_path / "home" / ".ray").exists()  # Ray's world-readable default is never written
    session = Path(seen["session"])
    private = short_tmp / f"apm-bench-ray-{os.getuid()}"
    assert session.parent.parent == private and _mode(private) == 0o700  # Ray makes the rest 0777, inside it
    assert seen["wrong"] == "" and seen["right"] == "joined"  # only the token opens the cluster


def test_a_folder_or_token_that_is_not_this_users_own_is_refused(tmp_path, short_tmp, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp))
    monkeypatch.setenv("APM_BENCH_HOME", str(tmp_path / "apm"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (short_tmp / f"apm-bench-ray-{os.getuid()}").symlink_to(elsewhere)  # planted by someone else
    with pytest.raises(HarnessError, match="is not a folder of this user's") as info:
        cluster.private_temp_dir()
    assert "\n" not in str(info.value)
    monkeypatch.setenv("RAY_TMPDIR", "/tmp/" + "x" * 60)
    with pytest.raises(HarnessError, match="too long a path: Ray's unix sockets"):
        cluster.private_temp_dir()

    token = tmp_path / "apm" / "ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.symlink_to(elsewhere / "token")
    with pytest.raises(HarnessError, match="cannot keep the local Ray cluster's token"):
        cluster.private_token()


def test_an_existing_token_is_kept_and_narrowed(tmp_path, monkeypatch):
    monkeypatch.setenv("APM_BENCH_HOME", str(tmp_path / "apm"))
    token = tmp_path / "apm" / "ray" / "auth_token"
    token.parent.mkdir(parents=True, mode=0o755)
    token.write_text("ab" * 32)
    token.chmod(0o644)
    assert cluster.private_token() == token
    assert token.read_text() == "ab" * 32 and _mode(token) == 0o600 and _mode(token.parent) == 0o700
    token.write_text("")  # a first run interrupted between creating and writing it
    cluster.private_token()
    assert len(token.read_text()) == 64


def test_more_workers_than_the_cluster_can_place_are_capped_with_a_note(tmp_path, short_tmp):
    done = subprocess.run([EXE, "run", "--task", "synthetic:2", "--method", "zeroshot", "--shard-size", "1",
                           "--limit", "4", "--workers", "100000", "--no-progress", "--out-root", str(tmp_path / "results")],
                          cwd=tmp_path, env=_env(tmp_path, short_tmp), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cpus = os.cpu_count()
    assert (f"note: --workers 100000: the cluster can place {cpus} CPU worker(s) of 1 CPU(s); running {min(cpus, 2)}"
            in done.stderr.splitlines())


def test_an_address_where_nothing_listens_fails_with_one_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in ("127.0.0.1:1", f"ray://127.0.0.1:{port}"):
        done = subprocess.run([EXE, "run", "--task", "synthetic:2", "--method", "zeroshot", "--no-progress",
                               "--address", address], cwd=tmp_path, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: cannot join the Ray cluster at --address {address}: "
                          "nothing listens there (connection refused)"], done.stderr[-3000:]
        assert "Traceback" not in done.stderr


def test_a_port_that_answers_but_is_no_ray_cluster_is_named():
    with socket.socket() as server:  # listens, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(HarnessError, match=f"at --address {address}: something listens there but it is not a Ray"):
            cluster._probe(address, seconds=0.5)
