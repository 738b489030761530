"""The hub source through a hand-built offline Hugging Face cache, `--limit`, and missing data."""

import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from harness.config import DataConfig, ExecConfig, RunConfig
from harness.engine.runner import prepare
from harness.errors import HarnessError
from tasks.base import SampleRef
from tasks.imagenet import VARIANTS, class_space
from tasks.sampling import stratified_subset

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(tmp_path, hub_names: list[str], labels: list[int]):
    repo = tmp_path / "hub" / "datasets--clip-benchmark--wds_imagenet-a"
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "test").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (snapshot / "classnames.txt").write_text("\n".join(hub_names) + "\n")
    with tarfile.open(snapshot / "test" / "0.tar", "w") as tar:
        for i, cls in enumerate(labels):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(buf, format="webp")
            for ext, data in (("webp", buf.getvalue()), ("cls", str(cls).encode())):
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_hub_source_reads_a_pinned_snapshot_and_remaps_labels_by_name(tmp_path):
    ours = class_space(next(v for v in VARIANTS if v.name == "imagenet-a"))[1]
    hub_names = list(reversed(ours))  # the hub's class order differs from ours: labels must follow names
    _hub_cache(tmp_path, hub_names, labels=[0, 1, 199])
    code = (
        "import json; from harness.config import DataConfig; from tasks.registry import resolve_task;"
        "t = resolve_task('imagenet-a', DataConfig(source='hub'));"
        "refs = t.samples(); img = t.load(refs[2]);"
        "print(json.dumps({'source': t.source, 'version': t.version, 'n': len(t.classnames),"
        "'ids': [r.sample_id for r in refs], 'labels': [r.label for r in refs],"
        "'size': img.image.size, 'mode': img.image.mode, 'pixel': img.image.getpixel((0, 0)), 'hash': img.content_hash}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["source"] == f"hub:clip-benchmark/wds_imagenet-a@{COMMIT}" and got["version"] == COMMIT
    assert got["n"] == 200 and got["ids"] == ["test/s00000", "test/s00001", "test/s00002"]
    assert got["labels"] == [199, 198, 0]
    assert got["size"] == [16, 16] and got["mode"] == "RGB" and abs(got["pixel"][0] - 60) <= 3 and got["hash"]


def test_hub_fetch_failure_is_one_line(tmp_path):
    code = "from harness.config import DataConfig; from tasks.registry import resolve_task; resolve_task('imagenet-r', DataConfig(source='hub'))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "cannot fetch hub dataset clip-benchmark/wds_imagenet-r (revision main)" in out.stderr


def test_limit_is_stratified_seeded_and_in_task_order():
    refs = [SampleRef(f"c{label}/{i}", label, "") for label, count in ((0, 60), (1, 30), (2, 10)) for i in range(count)]
    subset = stratified_subset(refs, 20, seed=0, task="t")
    assert Counter(r.label for r in subset) == {0: 12, 1: 6, 2: 2}
    assert subset == sorted(subset, key=refs.index)
    assert subset == stratified_subset(refs, 20, seed=0, task="t")
    assert subset != stratified_subset(refs, 20, seed=1, task="t")
    assert len(stratified_subset(refs, 7, 0, "t")) == 7 and stratified_subset(refs, None, 0, "t") == refs


def test_nothing_starts_until_every_task_has_data(tmp_path):
    (tmp_path / "imagenet-r").mkdir()
    config = RunConfig(tasks=("synthetic:1", "imagenet-a", "imagenet-r"), methods=("zeroshot",))
    with pytest.raises(HarnessError, match="task imagenet-a: data not found.*and 1 more task"):
        prepare(config, ExecConfig(data_root=str(tmp_path)))
    kept, tasks = prepare(config, ExecConfig(data_root=str(tmp_path), skip_missing=True))
    assert kept.tasks == ("synthetic:1",) and [t.name for t in tasks] == ["synthetic:1"]
    # --skip-missing skips absent data only: a bad parameter still stops the run
    typo = RunConfig(tasks=("synthetic:1", "imagenet-c/fog/9"), methods=("zeroshot",))
    with pytest.raises(HarnessError, match="severity 1-5"):
        prepare(typo, ExecConfig(data_root=str(tmp_path), skip_missing=True))


def test_limit_is_part_of_the_fingerprint():
    base = RunConfig(tasks=("synthetic",), methods=("zeroshot",))
    limited = RunConfig(tasks=("synthetic",), methods=("zeroshot",), data=DataConfig(limit=10))
    assert base.fingerprint() != limited.fingerprint()
