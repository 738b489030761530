"""Lost workers, interrupted runs, numerical faults and a real `ray start` cluster. Each run is a
real `apm-bench` process on Ray; tests stop only the processes they started."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import resultfiles, rundir
from harness.config import RunConfig
from harness.methods.configs import ApmConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from tasks.registry import resolve_task

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
SLOW = ["--task", "synthetic:4", "--method", "zeroshot,apm", "--shard-size", "3", "--workers", "2", "--no-progress",
        "--set", "apm.image_size=64", "--set", "apm.patch_size=8", "--set", "apm.hidden=256,128", "--set", "apm.steps=30",
        "--set", "apm.lr=1e-3"]
RESULT = ["sample_id", "method", "prediction", "top5", "confidence", "prediction_before", "losses", "seed", "error"]


def _env(**extra: str) -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", **extra}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_shards(run_dir: Path, count: int, proc: subprocess.Popen, timeout: float = 180, prefix: str = "") -> None:
    """Until `count` result files whose ids start with `prefix` (`stream`: a stream's parts) are in place."""
    deadline = time.time() + timeout
    while len([s for s in resultfiles.done_shards(run_dir) if s.startswith(prefix)]) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "run made no progress"
        time.sleep(0.05)


def undisturbed(cwd: Path, args: list[str], run_id: str) -> Path:
    """A whole run, never disturbed: what an interrupted or damaged one must end up equal to."""
    done = subprocess.run([EXE, "run", *args, "--run-id", run_id], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    return cwd / "results" / run_id


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _worker_pids(driver: int) -> list[int]:
    pids = []
    for pid in _descendants(driver):
        try:
            if (Path("/proc") / str(pid) / "cmdline").read_bytes().startswith((b"ray::ShardActor", b"ray::ShardWorker")):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _rows(run_dir: Path) -> pd.DataFrame:
    rows = resultfiles.read_rows([run_dir]).sort_values(["sample_id", "method"]).reset_index(drop=True)
    return rows[RESULT].assign(top5=rows["top5"].map(list), losses=rows["losses"].map(list))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The same run, never disturbed."""
    return _rows(undisturbed(tmp_path_factory.mktemp("reference"), SLOW, "ref"))


def test_a_killed_worker_costs_only_its_shards(tmp_path, reference):
    proc = _start([*SLOW, "--run-id", "killed"], tmp_path)
    run_dir = tmp_path / "results" / "killed"
    _wait_for_shards(run_dir, 3, proc)
    victims = _worker_pids(proc.pid)
    assert victims, "no worker process found under the driver"
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    rows = _rows(run_dir)
    assert len(rows) == 96 and not rows.duplicated(["sample_id", "method"]).any()
    pd.testing.assert_frame_equal(rows, reference, check_exact=True)


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    """Ctrl-C mid-run (SIGTERM and other moments: tests/test_interrupts.py), then --resume."""
    proc = _start([*SLOW, "--run-id", "cut"], tmp_path)
    run_dir = tmp_path / "results" / "cut"
    _wait_for_shards(run_dir, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"apm-bench run --resume {Path('results') / 'cut'}" in err and "Traceback" not in err
    kept = resultfiles.done_shards(run_dir)
    assert 2 <= len(kept) < 16 and not list((run_dir / "shards").glob(".*"))  # nothing half-written
    assert rundir.read_manifest(run_dir)["finished"] is None
    resumed = subprocess.run([EXE, "run", "--resume", str(run_dir), "--no-progress", "--workers", "2"], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "16/16 shards" in resumed.stdout and f"{(16 - len(kept)) * 6} rows written" in resumed.stdout
    pd.testing.assert_frame_equal(_rows(run_dir), reference, check_exact=True)
    assert rundir.read_manifest(run_dir)["finished"]


def test_another_config_in_the_same_directory_is_refused_or_forked(ray_local, tmp_path):
    from harness.config import ExecConfig
    from harness.engine.runner import run
    from harness.errors import HarnessError

    base = RunConfig(tasks=("synthetic:1",), methods=("zeroshot",))
    execution = ExecConfig(out_root=str(tmp_path / "results"), run_id="same", workers=1, progress=False)
    run(base, execution)
    other = RunConfig(tasks=("synthetic:1",), methods=("zeroshot",), seed=7)
    with pytest.raises(HarnessError, match="another config.*--force-new") as refused:
        run(other, execution)
    assert "\n" not in str(refused.value)
    forked = run(other, ExecConfig(out_root=str(tmp_path / "results"), run_id="same", workers=1, progress=False,
                                   force_new=True))
    assert forked.run_dir.name != "same" and len(list((tmp_path / "results").iterdir())) == 2


def test_a_non_finite_ttt_loss_marks_the_row_failed_with_its_step():
    task = resolve_task("synthetic:1")
    config = RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "apm"), settings=(("apm", ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=5, lr=1e10, init_std=1.0)),))
    rows = ShardWorker(config, {task.name: task}, RunIdentity("r", "f", "c")).process(plan_shards([task], 3)[0])
    apm = [r for r in rows.to_pylist() if r["method"] == "apm"]
    assert apm and all(r["prediction"] is None and r["correct"] is None for r in apm)
    assert all(r["error"].startswith("non-finite TTT loss at step ") for r in apm)
    assert all(len(r["losses"]) == r["ttt_steps"] + 1 for r in apm)  # the trajectory up to the bad step
    assert all(r["error"] is None for r in rows.to_pylist() if r["method"] == "zeroshot")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_on_a_real_ray_cluster_started_with_ray_start(tmp_path):
    port = _free_port()
    ray_exe = str(Path(sys.executable).parent / "ray")
    env = _env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token")
    head = subprocess.Popen(
        [ray_exe, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        done = subprocess.run(
            [EXE, "run", "--task", "synthetic:1", "--method", "zeroshot", "--address", f"127.0.0.1:{port}",
             "--no-progress", "--run-id", "cluster"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        rows = resultfiles.read_rows([tmp_path / "results" / "cluster"])
        assert len(rows) == 12 and rows["error"].isna().all()
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the processes this test started
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
