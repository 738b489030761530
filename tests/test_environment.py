"""Where rows were computed: each row names its device model and environment, the manifest holds the
environment's record (device, CUDA, cuDNN, driver, the node's packages), a resume on another GPU model
is refused unless allowed, and --deterministic switches torch's deterministic kernels on."""

import dataclasses

import pytest
import torch

from harness import environment, resultfiles, rundir
from harness.config import ExecConfig, RunConfig
from harness.engine import runner
from harness.engine.environments import Environments
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from tasks.registry import resolve_task

CONFIG = RunConfig(tasks=("synthetic:1",), methods=("zeroshot",), shard_size=6)
A100 = {"host": "a", "device": "NVIDIA A100-SXM4-80GB", "cuda": "12.8", "cudnn": "91002", "driver": "570.124.06"}
H100 = {**A100, "host": "h", "device": "NVIDIA H100 80GB HBM3"}


def test_rows_name_the_environment_the_manifest_records(tmp_path, ray_local):
    summary = runner.run(CONFIG, ExecConfig(out_root=str(tmp_path), run_id="env", workers=1, progress=False))
    rows = resultfiles.read_rows([summary.run_dir])
    recorded = rundir.read_manifest(summary.run_dir)["environments"]
    assert set(rows["environment"]) == set(recorded) and len(recorded) == 1
    [env] = recorded.values()
    assert set(rows["device_model"]) == {env["device"]} and env["torch"] == torch.__version__
    assert {"host", "python", "open_clip_torch", "numpy"} <= set(env)


def _manifest(tmp_path, *envs):
    run_dir = tmp_path / "run"
    manifest = {"run_id": "run", "environments": {environment.environment_id(e): e for e in envs}}
    rundir.write_manifest(run_dir, manifest)
    return run_dir, manifest


def test_a_resume_on_another_gpu_model_is_refused_unless_allowed(tmp_path):
    run_dir, manifest = _manifest(tmp_path, A100)
    seen = Environments(run_dir, manifest)
    seen.seen({"environment": {**A100, "host": "b"}, "environment_id": environment.environment_id(A100)})
    with pytest.raises(HarnessError, match="computed on NVIDIA A100-SXM4-80GB; a worker on h has NVIDIA H100 80GB HBM3"):
        seen.seen({"environment": H100, "environment_id": environment.environment_id(H100)})
    allowed = Environments(run_dir, manifest, allow_other_device=True)
    allowed.seen({"environment": H100, "environment_id": environment.environment_id(H100)})
    assert environment.environment_id(H100) in rundir.read_manifest(run_dir)["environments"]  # written at once


def test_a_run_made_on_cpus_takes_any_gpu_and_a_new_run_any_model(tmp_path):
    cpu = {"host": "c", "device": "Intel Xeon", "torch": "2.14.1"}
    for earlier in ((cpu,), ()):
        run_dir, manifest = _manifest(tmp_path, *earlier)
        Environments(run_dir, manifest).seen({"environment": H100, "environment_id": environment.environment_id(H100)})


def test_the_environment_id_ignores_the_host_and_the_driver_is_read_from_the_kernel_module(tmp_path, monkeypatch):
    assert environment.environment_id(A100) == environment.environment_id({**A100, "host": "z"})
    assert environment.environment_id(A100) != environment.environment_id(H100)
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build  (dvs)\n"
                       "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(environment, "DRIVER_FILE", version)
    assert environment.driver_version() == "570.124.06"


def test_deterministic_is_in_the_fingerprint_and_switches_torch_on(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    task = resolve_task("synthetic:1")
    [shard] = plan_shards([task], 6, limit=6)
    identity = RunIdentity("r", "f", "c")
    plain = ShardWorker(CONFIG, {task.name: task}, identity).rows(shard)
    strict = dataclasses.replace(CONFIG, deterministic=True)
    assert strict.fingerprint() != CONFIG.fingerprint()
    try:
        rows = ShardWorker(strict, {task.name: task}, identity).rows(shard)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert environment.os.environ["CUBLAS_WORKSPACE_CONFIG"] == environment.CUBLAS_WORKSPACE
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    same = ("sample_id", "prediction", "top5", "confidence")
    assert [[getattr(r, k) for k in same] for r in rows] == [[getattr(r, k) for k in same] for r in plain]
