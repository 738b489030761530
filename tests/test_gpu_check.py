"""bench/gpu_check.py, the script a first GPU machine runs, runs end to end here with --device cpu:
every check in its own process, a JSON summary, the exit code; and its offline wheel folder imports."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _run(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", *args], cwd=tmp_path,
                          env={**os.environ, "OUT": str(tmp_path / "out"), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600)
    return done, json.loads((tmp_path / "out" / "gpu_check.json").read_text())


def test_the_checks_run_on_the_cpu_and_write_their_summary(tmp_path):
    done, summary = _run(tmp_path, "--only", "environment,rows,device-assert")  # every check: about a minute
    assert done.returncode == 0, done.stdout + done.stderr
    status = {c["check"]: c["status"] for c in summary["checks"]}
    assert status == {"environment": "pass", "rows-apm-tiny": "pass", "device-assert": "skipped"}
    rows = next(c for c in summary["checks"] if c["check"] == "rows-apm-tiny")
    assert rows["numbers"]["rows"] == 4 * 19 and summary["failed"] == []  # 11 episodic methods and 8 online
    assert "all checks passed" in done.stdout


def test_checks_the_deadline_leaves_out_are_not_passed(tmp_path):
    done, summary = _run(tmp_path, "--only", "environment,rows", "--deadline", "0")
    assert done.returncode == 1 and {c["status"] for c in summary["checks"]} == {"not-run"}
    assert summary["failed"] == ["environment", "rows-apm-tiny"]


def test_a_folder_of_wheels_is_imported_from_without_pip(tmp_path):
    wheel = tmp_path / "wheels" / "gpucheckdemo-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("gpucheckdemo/__init__.py", "ANSWER = 42\n")
        archive.writestr("gpucheckdemo-1.0.dist-info/METADATA", "Name: gpucheckdemo\nVersion: 1.0\n")
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import gpu_check; "
            f"site = gpu_check.use_wheels(__import__('pathlib').Path({str(wheel.parent)!r})); "
            "import gpucheckdemo; print(gpucheckdemo.ANSWER, site.name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["42", "site"], done.stderr
