"""The driver on a real local Ray instance (127.0.0.1, 2 CPUs)."""

import dataclasses

import pandas as pd
import pytest

from harness import resultfiles, rundir
from harness.config import DataConfig, ExecConfig, RunConfig
from harness.methods.configs import ApmConfig, TptConfig
from harness.engine.runner import prepare, run
from harness.errors import HarnessError

CONFIG = RunConfig(
    tasks=("synthetic:2",),
    methods=("zeroshot", "apm", "tpt"),
    shard_size=5, settings=(("apm", ApmConfig(image_size=64, patch_size=8, hidden=(128, 64), steps=6, lr=1e-3)), ("tpt", TptConfig(views=16)),))
RESULT_COLUMNS = ["task", "sample_id", "method", "seed", "prediction", "top5", "confidence", "prediction_before", "losses"]


def _run(tmp_path, workers: int, run_id: str, config: RunConfig = CONFIG):
    execution = ExecConfig(out_root=str(tmp_path), run_id=run_id, workers=workers, progress=False)
    return run(config, execution)


def _results(run_dir):
    rows = resultfiles.read_rows([run_dir])
    rows = rows.sort_values(["sample_id", "method"])[RESULT_COLUMNS].reset_index(drop=True)
    return rows.assign(top5=rows["top5"].map(list), losses=rows["losses"].map(list))


def test_one_and_two_workers_give_identical_rows(tmp_path, ray_local):
    one = _run(tmp_path, 1, "one")
    two = _run(tmp_path, 2, "two")
    assert one.shards_total == two.shards_total == 5 and one.samples == 24
    a, b = _results(one.run_dir), _results(two.run_dir)
    assert len(a) == 72 and a["sample_id"].nunique() == 24
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    workers = set(resultfiles.read_rows([two.run_dir])["worker"])
    assert len(workers) == 2  # both actors did work


def test_local_ray_binds_to_loopback(ray_local):
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}


def test_rerun_skips_finished_shards_and_refuses_another_config(tmp_path, ray_local):
    first = _run(tmp_path, 2, "same")
    manifest = rundir.read_manifest(first.run_dir)
    assert manifest["fingerprint"] == dataclasses.replace(prepare(CONFIG)[0], device_type="cpu").fingerprint() and manifest["finished"]
    assert manifest["versions"]["torch"] and manifest["code_version"]
    assert manifest["config"]["task_versions"] == [["synthetic:2", "1"]]
    again = _run(tmp_path, 2, "same")
    assert again.rows_written == 0 and again.shards_done == 5
    other = dataclasses.replace(CONFIG, seed=1)
    with pytest.raises(HarnessError, match="another config"):
        _run(tmp_path, 2, "same", other)


def test_unknown_names_fail_before_any_work(tmp_path):
    for config, message in [
        (dataclasses.replace(CONFIG, methods=("apm", "tpt-typo")), "unknown method"),
        (dataclasses.replace(CONFIG, tasks=("imagenet-x",)), "unknown task"),
    ]:
        with pytest.raises(HarnessError, match=message):
            _run(tmp_path, 1, "never", config)
        assert not (tmp_path / "never").exists()


def test_a_disk_task_with_limit_runs_end_to_end(tmp_path, ray_local):
    from tests.conftest import write_image

    data = tmp_path / "data" / "imagenetv2-matched-frequency-format-val"
    for label in (0, 1, 10, 2):
        for j in range(3):
            write_image(data / str(label) / f"{j}.jpeg", (20 * label, 80, 120), seed=label * 3 + j)
    config = dataclasses.replace(CONFIG, tasks=("imagenet-v2",), methods=("zeroshot",),
                                 data=DataConfig(limit=8))
    execution = ExecConfig(out_root=str(tmp_path / "out"), run_id="v2", workers=2, progress=False,
                           data_root=str(tmp_path / "data"))
    summary = run(config, execution)
    rows = resultfiles.read_rows([summary.run_dir])
    assert summary.samples == 8 and len(rows) == 8
    assert sorted(rows.groupby("label").size().tolist()) == [2, 2, 2, 2]  # stratified: 2 of each class
    assert set(rows["data_source"]) == {"disk"} and set(rows["task"]) == {"imagenet-v2"}
    assert rundir.read_manifest(summary.run_dir)["config"]["data"]["limit"] == 8


def test_the_cli_does_not_import_ray_before_the_run_configures_it():
    """Ray reads its loopback and auth settings when imported; importing it early would ignore them."""
    import subprocess
    import sys

    code = "import sys, cli, harness.engine.runner, harness.engine.worker; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
