"""Ctrl-C and SIGTERM at several moments of `apm-bench run`, as a user sends them: a subprocess with
its own local Ray. Whenever the signal arrives the run stops with exit code 130 and one line (what was
kept and how to resume, or that nothing was), never a traceback, never a run that goes on to exit 0,
and no Ray process left behind."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_cli import EXE


def _ray_processes(driver: int) -> set[int]:
    """Ray's own processes of the cluster `driver` started: Ray names its session folder after the
    process that started it (`session_<date>_<pid>`), so Ray clusters of other processes on this
    machine (another test run, a user's) are never counted."""
    out = subprocess.run(["pgrep", "-f", f"(raylet|gcs_server).*session_[0-9_-]+_{driver}( |/|$)"],
                         capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _interrupt(tmp_path: Path, after: float, sig: int) -> tuple[subprocess.CompletedProcess, float, int]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([EXE, "run", "--suite", "smoke", "--no-progress", "--out-root", str(tmp_path / "results")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - sent, proc.pid


@pytest.mark.parametrize(("after", "sig"), [
    (0.05, signal.SIGINT),  # while Python imports the command
    (0.8, signal.SIGINT),   # while the arguments and the data are checked
    (2.5, signal.SIGINT),   # while Ray starts
    (4.5, signal.SIGTERM),  # while the workers load their teachers
    (7.0, signal.SIGINT),   # while shards run
    (9.5, signal.SIGTERM),
], ids=lambda v: str(v) if isinstance(v, float) else signal.Signals(v).name)
def test_a_signal_at_any_moment_stops_the_run_with_one_line(tmp_path, after, sig):
    done, seconds, driver = _interrupt(tmp_path, after, sig)
    text = done.stdout + done.stderr
    assert "Traceback" not in text and "Exception ignored" not in text, text
    if done.returncode == 0:  # finished before the signal: a whole run, reported as usual
        assert "0 error rows" in done.stdout and "next: apm-bench report" in done.stdout
        return
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("about "):  # what the run would be, said before it started
        lines = lines[1:]
    assert done.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), done.stderr
    assert seconds < 30  # stopped promptly, not after finishing the run
    runs = list((tmp_path / "results").glob("*/manifest.json")) if (tmp_path / "results").exists() else []
    if "nothing" in lines[0]:
        assert not runs  # no empty run directory left to be reported
    else:
        assert "apm-bench run --resume" in lines[0] and len(runs) == 1
        resumed = subprocess.run([EXE, "run", "--resume", str(runs[0].parent), "--no-progress"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        assert resumed.returncode == 0 and "next: apm-bench report" in resumed.stdout, resumed.stderr
    for _ in range(40):  # Ray's own processes of the interrupted run go away
        if not _ray_processes(driver):
            break
        time.sleep(0.25)
    assert not _ray_processes(driver)
