"""Streams on the driver and real Ray workers: rows that depend only on the stream (not on the worker
count, where parts end, or a resume), verified checkpoints, and a killed worker that costs nothing."""

import dataclasses
import os
import signal
import subprocess

import pandas as pd
import pytest

from harness import resultfiles
from harness.config import ExecConfig, RunConfig
from harness.engine.runner import run
from harness.engine.stream_parts import state_path
from harness.errors import HarnessError
from harness.settings import settings_class
from tests.test_reliability import EXE, _env, _start, _wait_for_shards, _worker_pids, undisturbed

ONLINE = ("tda", "dmn-weak", "onzeta", "ecalp", "dmn", "boostadapter", "dpe", "dynaprompt")
"""TTA-VLM's eight online methods (DMN in both forms)."""
VIEWED = ("dmn", "boostadapter", "dpe", "dynaprompt")
"""Online methods that take TPT's views of each image: 10 here (one confident view), so a CPU runs them in seconds."""
CONFIG = RunConfig(tasks=("synthetic:2",), methods=("zeroshot", *ONLINE), shard_size=4, stream="dirichlet:0.1", streams=2,
                   settings=tuple((m, settings_class(m)(views=10)) for m in VIEWED))
COLUMNS = ["stream_id", "position", "task", "sample_id", "method", "prediction", "top5", "confidence",
           "prediction_before", "seed", "stream", "stream_seed", "error"]


def _run(tmp_path, run_id: str, config: RunConfig = CONFIG, workers: int = 2, seconds: float = 0.0):
    execution = ExecConfig(out_root=str(tmp_path), run_id=run_id, workers=workers, progress=False,
                           checkpoint_seconds=seconds)
    return run(config, execution)


def _online(run_dir) -> pd.DataFrame:
    rows = resultfiles.read_rows([run_dir])
    rows = rows[rows["stream"].notna()].sort_values(["stream_id", "position", "method"]).reset_index(drop=True)
    return rows[COLUMNS].assign(top5=rows["top5"].map(list))


def test_rows_depend_on_the_stream_only(tmp_path, ray_local):
    """One worker and two, a part per batch of 4 and one part per stream: the same rows."""
    parts = _run(tmp_path, "parts")
    whole = _run(tmp_path, "whole", workers=1, seconds=3600)
    a, b = _online(parts.run_dir), _online(whole.run_dir)
    assert len(a) == 2 * 24 * len(ONLINE) and set(a["stream"]) == {"dirichlet:0.1"} and set(a["method"]) == set(ONLINE)
    assert [sorted(set(g["position"])) for _, g in a.groupby("stream_id")] == [list(range(24))] * 2
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (a.groupby("stream_id")["sample_id"].agg(list).iloc[0] != a.groupby("stream_id")["sample_id"].agg(list).iloc[1])
    zeroshot = resultfiles.read_rows([parts.run_dir]).query("method == 'zeroshot'")
    assert len(zeroshot) == 24 and zeroshot["stream"].isna().all()  # episodic: once, whatever the streams
    assert not list((parts.run_dir / "states").iterdir())  # finished streams keep no state
    assert len(list((parts.run_dir / "segments").glob("stream*.parquet"))) == 2  # one file per finished stream


def test_a_damaged_checkpoint_sends_its_stream_back_to_the_start(tmp_path, ray_local):
    reference = _online(_run(tmp_path, "ref").run_dir)
    config = dataclasses.replace(CONFIG, streams=1)
    first = _run(tmp_path, "cut", config)
    run_dir = first.run_dir
    # make it look interrupted after 8 samples: the rows beyond go, and the state after 8 is damaged
    segment = next((run_dir / "segments").glob("stream*.parquet"))
    rows = resultfiles.read_rows([run_dir]).query("stream_id == 0")
    assert len(rows) == 24 * len(ONLINE)
    key = segment.name.split(".")[0]
    table = resultfiles.pa.Table.from_pandas(rows[rows["position"] < 8].reset_index(drop=True), schema=resultfiles.SCHEMA,
                                             preserve_index=False)
    segment.unlink()
    resultfiles.write_shard(run_dir, f"{key}-{0:09d}-{8:09d}", table, first_fingerprint(run_dir))
    state_path(run_dir, key, 8).parent.mkdir(exist_ok=True)
    state_path(run_dir, key, 8).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    again = _run(tmp_path, "cut", config)
    assert again.rows_written == 24 * len(ONLINE)
    assert len(list((run_dir / "quarantine").iterdir())) == 1
    pd.testing.assert_frame_equal(_online(run_dir), reference.query("stream_id == 0").reset_index(drop=True),
                                  check_exact=True)


def first_fingerprint(run_dir) -> str:
    from harness import rundir

    return rundir.read_manifest(run_dir)["fingerprint"]


def test_continual_streams_need_tasks_with_the_same_classes(tmp_path):
    config = dataclasses.replace(CONFIG, tasks=("synthetic:2", "fashion-mnist-c/fog/5"), stream="continual")
    with pytest.raises(HarnessError, match="same classes"):
        _run(tmp_path, "never", config)


INTERRUPTED = ("tda", "ecalp", "dmn", "dpe")
"""The interrupt and kill tests' methods: a cache, a graph, views with a memory, and a method that
learns (what a checkpoint must carry differs most between these); every online method's own state
round trip is tested in its module, and test_rows_depend_on_the_stream_only runs all eight here."""
SLOW = ["--task", "synthetic:8", "--method", ",".join(INTERRUPTED), "--shard-size", "1", "--checkpoint-seconds", "0",
        "--streams", "2", "--stream", "class-sequential", "--workers", "2", "--no-progress",
        *(f"--set={m}.views=10" for m in VIEWED if m in INTERRUPTED)]


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory) -> pd.DataFrame:
    return _online(undisturbed(tmp_path_factory.mktemp("streams"), SLOW, "ref"))


def test_interrupted_and_resumed_streams_equal_an_uninterrupted_run(tmp_path, slow_reference):
    proc = _start([*SLOW, "--run-id", "cut"], tmp_path)
    run_dir = tmp_path / "results" / "cut"
    _wait_for_shards(run_dir, 30, proc, prefix="stream")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 0 < len(_online(run_dir)) < len(slow_reference)
    resumed = subprocess.run([EXE, "run", "--resume", str(run_dir), "--no-progress"], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_online(run_dir), slow_reference, check_exact=True)


def test_a_worker_killed_mid_stream_loses_nothing(tmp_path, slow_reference):
    proc = _start([*SLOW, "--run-id", "killed"], tmp_path)
    run_dir = tmp_path / "results" / "killed"
    _wait_for_shards(run_dir, 30, proc, prefix="stream")
    victims = _worker_pids(proc.pid)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    pd.testing.assert_frame_equal(_online(run_dir), slow_reference, check_exact=True)


def test_the_feature_cache_is_written_once_and_read_back_for_the_same_rows(tmp_path, ray_local):
    cached = dataclasses.replace(CONFIG, feature_cache=True, methods=("zeroshot", "tda", "onzeta"))
    cache = tmp_path / "features"

    def go(run_id: str, workers: int):
        execution = ExecConfig(out_root=str(tmp_path), run_id=run_id, workers=workers, progress=False,
                               checkpoint_seconds=0, feature_cache_dir=str(cache))
        return run(cached, execution)

    first = go("fill", 2)
    files = sorted(cache.rglob("*.safetensors"))
    assert len(files) == 6  # one per canonical shard of 4 samples
    stamps = [f.stat().st_mtime_ns for f in files]
    second = go("read", 1)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, never made again
    a, b = _online(first.run_dir), _online(second.run_dir)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    zero = [resultfiles.read_rows([r.run_dir]).query("method == 'zeroshot'").sort_values("sample_id")
            [["sample_id", "prediction", "confidence", "content_hash"]].reset_index(drop=True) for r in (first, second)]
    pd.testing.assert_frame_equal(*zero, check_exact=True)
    # a damaged file is made again, and the rows stay the same
    files[0].write_bytes(files[0].read_bytes()[:-8] + b"\0" * 8)
    third = go("repair", 2)
    assert files[0].stat().st_mtime_ns != stamps[0]
    pd.testing.assert_frame_equal(_online(third.run_dir), a, check_exact=True)


def test_a_run_made_with_the_cache_needs_it_to_continue(tmp_path):
    with pytest.raises(HarnessError, match="--feature-cache DIR"):
        _run(tmp_path, "never", dataclasses.replace(CONFIG, feature_cache=True))
