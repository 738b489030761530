"""More than one node (#13). A run on a real two-node Ray cluster, both nodes started with `ray start` on
this machine, each from its own working directory and temp dir, driven from a third directory with the
relative paths a user types, gives the rows of a local run, row for row, and both nodes produce rows.
Nothing may assume that the driver and the workers share a working directory: every path a user gives
is made absolute on the driver, before the config, tasks and shards are pickled to the workers."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import resultfiles, rundir
from harness.config import DataConfig, ExecConfig, RunConfig, TeacherConfig
from harness.engine.prepare import check, pin_weights
from harness.engine.shards import plan_shards
from harness.models.sources import SHIPPED_WEIGHTS, resolve_source
from tasks.request import TaskRequest
from tests.conftest import write_image
from tests.test_fashion_mnist import write_idx
from tests.test_finegrained import BY_NAME, make_split_dataset
from tests.test_natural_shift import A_WNIDS, WNIDS, _folders
from tests.test_reliability import EXE, _descendants, _env, _free_port, _rows

RAY = str(Path(sys.executable).parent / "ray")
RUN = ["--task", "imagefolder:data/shapes", "--task", "fashion-mnist", "--data-root", "data",
       "--method", "zeroshot,apm", "--model", "apm-mini", "--pretrained", "teachers/mini", "--out-root", "results",
       "--workers", "2", "--shard-size", "2", "--no-progress",
       "--set", "apm.image_size=64", "--set", "apm.patch_size=8", "--set", "apm.hidden=256,256,128", "--set", "apm.lr=1e-3",
       "--set", "apm.steps=5"]
"""Relative paths everywhere a user would type one: 6 images in 3 classes + 4 Fashion-MNIST images (5 shards,
so each actor gets 2 at once), the shipped teacher copied beside the data."""

JOIN = """
import sys, types
import ray._private.ray_constants as constants
from ray.scripts import scripts
view = types.ModuleType(constants.__name__)
view.__dict__.update(vars(constants))
view.ENABLE_RAY_CLUSTER = True  # seen by the CLI's multi-node check only; Ray's services keep 127.0.0.1
scripts.ray_constants = view
sys.argv[0] = "ray"
scripts.main()
"""
"""`ray start` for the second node, with one check lifted. Ray 2.60 refuses `ray start --address` while
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it =1 rewrites 127.0.0.1 (in --address and in
--node-ip-address) to the machine's public IP and listens on every interface (ray-project/ray#59110).
With the variable at 0 everywhere and only the CLI's check seeing it at 1, the node joins over loopback,
with every port on 127.0.0.1 (asserted below); everything else is the real `ray start --block`."""

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
"""127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} spell them."""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    cwd: Path
    temp_dir: Path

    @property
    def log(self) -> Path:
        return self.cwd / "ray-start.log"


def _write_run_data(root: Path) -> None:
    """What RUN reads, under the driver's working directory."""
    colours = {"red": (200, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 210)}
    for k, (name, colour) in enumerate(colours.items()):
        for j in range(2):
            write_image(root / "data" / "shapes" / name / f"{j}.png", colour, seed=10 * k + j)
    fashion = root / "data" / "fashion-mnist"
    fashion.mkdir(parents=True)
    write_idx(fashion / "t10k-images-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 256, (4, 28, 28)))
    write_idx(fashion / "t10k-labels-idx1-ubyte.gz", np.array([0, 3, 9, 1]))
    shutil.copytree(SHIPPED_WEIGHTS["synthetic-teacher"], root / "teachers" / "mini")


def _strings(obj: object) -> Iterator[str]:
    """Every string inside a pickled payload: configs, tasks and shards are dataclasses and tuples."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, os.PathLike):
        yield os.fspath(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _strings(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            yield from _strings(value)


@pytest.mark.parametrize("spec", ["imagefolder:data/shapes", "fashion-mnist", "fashion-mnist:data/fashion-mnist",
                                  "fashion-mnist-c/gaussian_noise/5", "imagenet-a", "imagenet-c/fog/5", "oxford-pets"])
def test_tasks_from_relative_paths_ship_only_absolute_ones(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    _write_run_data(tmp_path)
    _folders(tmp_path / "data" / "imagenet" / "val", [WNIDS[0], WNIDS[7]], per=1)
    _folders(tmp_path / "data" / "imagenet-a", [A_WNIDS[0]], per=1)
    make_split_dataset(tmp_path / "data", BY_NAME["oxford-pets"], "oxford_pets/images", split_at=tmp_path / "splits")
    config = RunConfig(tasks=(spec,), methods=("zeroshot",), teacher=TeacherConfig("apm-mini", "teachers/mini"),
                       data=DataConfig(corruptions="generated"))
    config, tasks, problems = check(config, ExecConfig(data_root="data", splits_dir="splits"))
    assert not problems and len(tasks) == 1
    config = pin_weights(config)
    # what the runner sends: the config and tasks to every actor, then the shards
    shipped = pickle.dumps((config, {t.name: t for t in tasks}, plan_shards(tasks, 2)))
    strings = set(_strings(pickle.loads(shipped)))
    assert not [s for s in strings if os.path.exists(s) and not os.path.isabs(s)]  # nothing relative to open
    assert any(s.startswith(str(tmp_path / "data")) for s in strings)  # the data, by its absolute path
    assert config.teacher.pretrained == str(tmp_path / "teachers" / "mini")

    elsewhere = tmp_path / "elsewhere"  # a worker's working directory
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config, by_name, shards = pickle.loads(shipped)
    assert resolve_source(config.teacher.model, config.teacher.pretrained).path == str(tmp_path / "teachers" / "mini")
    for shard in shards:
        for ref in shard.refs:
            assert by_name[shard.task].load(ref).image.mode == "RGB"


def test_a_task_request_gives_its_paths_absolute_and_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APM_BENCH_DATA", "env-data")
    request = TaskRequest.parse("imagefolder:data/shapes", splits_dir="splits")
    assert (request.path, request.root, request.splits) == (tmp_path / "data/shapes", tmp_path / "env-data",
                                                            tmp_path / "splits")  # $APM_BENCH_DATA too
    request = TaskRequest.parse("imagefolder:~/x", data_root="~/d")
    assert (request.path, request.root) == (Path.home() / "x", Path.home() / "d")


def _start_node(name: str, command: list[str], cwd: Path, env: dict) -> Node:
    cwd.mkdir()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit in 107 bytes
    with open(cwd / "ray-start.log", "wb") as log:
        proc = subprocess.Popen([*command, "--num-cpus", "1", "--temp-dir", str(temp_dir), "--block"], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Node(name, proc, cwd, temp_dir)


def _wait_started(node: Node, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while "Ray runtime started" not in node.log.read_text(errors="replace"):
        assert node.proc.poll() is None, f"{node.name} exited:\n{node.log.read_text(errors='replace')}"
        assert time.time() < deadline, f"{node.name} did not start:\n{node.log.read_text(errors='replace')}"
        time.sleep(0.2)


def _cmdline(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _raylet(node: Node) -> tuple[int, str]:
    """The node's raylet (a process of its `ray start` group) and the node id it was started with."""
    for pid in _descendants(node.proc.pid):
        argv = _cmdline(pid)
        if argv and argv[0].endswith("/raylet"):
            return pid, next(a.split("=", 1)[1] for a in argv if a.startswith("--node_id="))
    raise AssertionError(f"no raylet under {node.name}")


def _node_of(pid: int, nodes: list[Node], node_ids: dict[str, str]) -> str:
    """The node that ran worker process `pid`. Each Ray worker writes python-core-worker-<id>_<pid>.log into
    its own node's session logs (each node has its own --temp-dir here), and that log names the node id
    its raylet gave it, which must be the id on the raylet command line of that node's `ray start` group."""
    found = {n.name: logs for n in nodes if (logs := list(n.temp_dir.glob(f"session_*/logs/python-core-worker-*_{pid}.log")))}
    assert len(found) == 1, f"worker pid {pid}: core-worker logs on {sorted(found) or 'no node'}"
    [(name, logs)] = found.items()
    # the first node id a core-worker log names is its own ("Initializing worker at address: ... node_id=")
    said = {m.group(1) for log in logs if (m := re.search(r"node_id=([0-9a-f]{20,})", log.read_text(errors="replace")))}
    assert said == {node_ids[name]}, f"worker pid {pid}: its log names node {said}, its node's raylet is {node_ids[name]}"
    return name


def _listening_off_loopback(pids: set[int]) -> list[str]:
    """TCP sockets the processes listen on, other than on 127.0.0.1 / ::1 (read from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            fds = list((Path("/proc") / str(pid) / "fd").iterdir())
        except OSError:  # gone meanwhile
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    off = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes and fields[1].split(":")[0] not in LOOPBACK:
                off.append(f"{table} {fields[1]}")
    return off


def _started_at(pid: int) -> str | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stop(nodes: list[Node]) -> None:
    """TERM each `ray start` group, KILL what is left after 2 s, then any Ray worker they spawned that has
    a process group of its own (by pid, and only the very process seen: same start time)."""
    spawned = {pid: _started_at(pid) for n in nodes for pid in _descendants(n.proc.pid)}
    for node in nodes:
        try:
            os.killpg(node.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 2  # a `ray start` drains for up to 30 s on SIGTERM: do not wait for that
    for node in nodes:
        try:
            node.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for node in nodes:
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=15)
    for pid, started in spawned.items():
        if started is not None and _started_at(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for node in nodes:
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def test_a_two_node_cluster_gives_a_local_runs_rows_from_both_nodes(tmp_path):
    driver = tmp_path / "driver"  # the driver's working directory; each node has its own
    _write_run_data(driver)
    # the local run (its own Ray instance) goes on while the cluster starts
    local = subprocess.Popen([EXE, "run", *RUN, "--run-id", "local"], cwd=driver, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    port = _free_port()
    env = _env(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    nodes: list[Node] = []
    try:
        nodes.append(_start_node("head", [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                          "--include-dashboard", "false"], tmp_path / "head", env))
        _wait_started(nodes[0])
        nodes.append(_start_node("worker", [sys.executable, "-c", JOIN, "start", "--address", f"127.0.0.1:{port}",
                                            "--node-ip-address", "127.0.0.1"], tmp_path / "worker", env))
        _wait_started(nodes[1])
        raylets = {n.name: _raylet(n) for n in nodes}
        node_ids = {name: node_id for name, (_, node_id) in raylets.items()}
        assert len(set(node_ids.values())) == 2
        # Ray workers are their raylet's children and keep its working directory: the node's, not the driver's
        assert {name: os.readlink(f"/proc/{pid}/cwd") for name, (pid, _) in raylets.items()} == {
            n.name: str(n.cwd) for n in nodes}
        _, err = local.communicate(timeout=300)
        assert local.returncode == 0, err

        done = subprocess.run([EXE, "run", *RUN, "--address", f"127.0.0.1:{port}", "--run-id", "cluster"], cwd=driver,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert _listening_off_loopback({p for n in nodes for p in [n.proc.pid, *_descendants(n.proc.pid)]}) == []

        cluster, reference = driver / "results" / "cluster", driver / "results" / "local"
        assert rundir.read_manifest(cluster)["fingerprint"] == rundir.read_manifest(reference)["fingerprint"]
        rows = _rows(cluster)
        assert len(rows) == 20 and rows["error"].isna().all() and not rows.duplicated(["sample_id", "method"]).any()
        pd.testing.assert_frame_equal(rows, _rows(reference), check_exact=True)

        per_worker = resultfiles.read_rows([cluster]).groupby("worker").size().to_dict()  # worker = hostname:pid
        ran_on = {worker: _node_of(int(worker.rsplit(":", 1)[1]), nodes, node_ids) for worker in per_worker}
        assert set(ran_on.values()) == {"head", "worker"}, (ran_on, per_worker)  # rows from actors on both nodes
    finally:
        if local.poll() is None:
            local.terminate()  # the run stops cleanly on SIGTERM, its local Ray with it
            local.communicate(timeout=60)
        _stop(nodes)
