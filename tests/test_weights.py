"""The teacher's weights by content: in the config, the fingerprint and every row; a resume over
changed weights is refused; a worker whose copy differs stops; named teachers live in a documented place."""

import shutil

import pytest
from safetensors.torch import load_file, save_file

from harness.config import RunConfig, TeacherConfig
from harness.engine.prepare import pin_weights, prepare
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from harness.models import sources
from harness.models.teacher import load_teacher

SHIPPED = sources.SHIPPED_WEIGHTS["synthetic-teacher"]


@pytest.fixture()
def teacher_dir(tmp_path):
    folder = tmp_path / "teacher"
    shutil.copytree(SHIPPED, folder)
    return folder


def _retrain(folder) -> None:
    """What retraining into the same folder does: other weights under the same path."""
    path = folder / "open_clip_model.safetensors"
    weights = load_file(path)
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, path)


def _config(folder) -> RunConfig:
    return RunConfig(tasks=("synthetic:1",), methods=("zeroshot",), teacher=TeacherConfig("apm-mini", str(folder)))


def test_the_hash_covers_the_weights_not_the_path(teacher_dir, tmp_path):
    source = sources.resolve_source("apm-mini", str(teacher_dir))
    first = sources.weights_sha256(source)
    assert first == sources.weights_sha256(sources.resolve_source("apm-mini", "synthetic-teacher"))  # same bytes
    (teacher_dir / "notes.txt").write_text("a note beside the weights changes nothing")
    assert sources.weights_sha256(source) == first
    _retrain(teacher_dir)
    assert sources.weights_sha256(source) != first  # the cache notices the new file (size and mtime)
    assert sources.weights_sha256(sources.ModelSource("apm-tiny", None, "none")) is None


def test_prepare_pins_the_hash_into_config_fingerprint_and_rows(teacher_dir):
    config, tasks = prepare(_config(teacher_dir))
    assert config.teacher.weights_sha256 == sources.weights_sha256(sources.resolve_source("apm-mini", str(teacher_dir)))
    rows = ShardWorker(config, {t.name: t for t in tasks}, RunIdentity("r", config.fingerprint(), "c")).process(
        plan_shards(tasks, 4)[0]).to_pylist()
    assert {r["weights_sha256"] for r in rows} == {config.teacher.weights_sha256}
    _retrain(teacher_dir)
    again, _ = prepare(_config(teacher_dir))
    assert again.fingerprint() != config.fingerprint()


def test_resuming_over_changed_weights_is_refused(teacher_dir):
    config, _ = prepare(_config(teacher_dir))
    assert pin_weights(config) == config  # the same weights: the resume goes on
    _retrain(teacher_dir)
    with pytest.raises(HarnessError, match="changed since this run started"):
        pin_weights(config)


def test_a_worker_whose_weights_differ_stops(teacher_dir):
    config, _ = prepare(_config(teacher_dir))
    _retrain(teacher_dir)
    with pytest.raises(HarnessError, match="not the ones this run started with"):
        load_teacher(config.teacher)


def test_a_named_trained_teacher_lives_under_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))
    with pytest.raises(HarnessError) as missing:
        sources.resolve_source("apm-mini", "fashion-mnist-teacher")
    message = str(missing.value)
    assert str(tmp_path / "home" / "teachers" / "fashion-mnist") in message
    assert "apm-bench teacher train --data fashion-mnist" in message
    shutil.copytree(SHIPPED, tmp_path / "home" / "teachers" / "fashion-mnist")
    found = sources.resolve_source("apm-mini", "fashion-mnist-teacher")
    assert found.kind == "trained" and found.path == str(tmp_path / "home" / "teachers" / "fashion-mnist")
