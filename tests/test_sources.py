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
from harness.errors import HarnessError, Problems
from tasks.base import SampleRef
from tasks.imagenet import VARIANTS, class_space
from tasks.sampling import stratified_subset

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(tmp_path, repo_name: str, hub_names: list[str], labels: list[int], templates: list[str] | None):
    repo = tmp_path / "hub" / f"datasets--clip-benchmark--{repo_name}"
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "test").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (snapshot / "classnames.txt").write_text("\n".join(hub_names) + "\n")
    if templates is not None:
        (snapshot / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    with tarfile.open(snapshot / "test" / "0.tar", "w") as tar:
        for i, cls in enumerate(labels):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(buf, format="webp")
            for ext, data in (("webp", buf.getvalue()), ("cls", str(cls).encode())):
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _resolve_in_subprocess(tmp_path, spec: str) -> dict:
    """Resolve a hub task offline against the hand-built cache (a fresh process: the cache location is
    read when huggingface_hub is imported)."""
    code = (
        "import json; from harness.config import DataConfig; from tasks.registry import resolve_task;"
        f"t = resolve_task({spec!r}, DataConfig(source='hub'));"
        "refs = t.samples(); img = t.load(refs[2]);"
        "print(json.dumps({'source': t.source, 'version': t.version, 'names': list(t.classnames),"
        "'protocol': t.protocol, 'template_set': t.templates.name, 'templates': list(t.templates),"
        "'ids': [r.sample_id for r in refs], 'labels': [r.label for r in refs],"
        "'size': img.image.size, 'mode': img.image.mode, 'pixel': img.image.getpixel((0, 0)), 'hash': img.content_hash}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hub_source_follows_the_clip_benchmark_protocol_whole(tmp_path):
    ours = list(class_space(next(v for v in VARIANTS if v.name == "imagenet-a"))[1])
    hub_names = list(reversed(ours))  # the hub's own class order, not ours
    _hub_cache(tmp_path, "wds_imagenet-a", hub_names, labels=[0, 1, 199], templates=["a bad photo of a {c}.", "art of the {c}."])
    got = _resolve_in_subprocess(tmp_path, "imagenet-a")
    assert got["source"] == f"hub:clip-benchmark/wds_imagenet-a@{COMMIT}" and got["version"] == COMMIT
    assert got["protocol"] == "clip-benchmark" and got["names"] == hub_names  # the hub's names, in its order
    assert got["labels"] == [0, 1, 199]  # the hub's labels, unchanged
    assert got["template_set"] == "clip-benchmark:wds_imagenet-a"
    assert got["templates"] == ["a bad photo of a {}.", "art of the {}."]  # the hub's templates, not CLIP's 80
    assert got["ids"] == ["test/s00000", "test/s00001", "test/s00002"]
    assert got["size"] == [16, 16] and got["mode"] == "RGB" and abs(got["pixel"][0] - 60) <= 3 and got["hash"]


def test_a_fine_grained_hub_task_never_borrows_coops_template(tmp_path):
    names = [f"texture {i}" for i in range(47)]
    _hub_cache(tmp_path, "wds_vtab-dtd", names, labels=[5, 6, 7], templates=["a photo of a {c} texture."])
    got = _resolve_in_subprocess(tmp_path, "dtd")
    assert got["protocol"] == "clip-benchmark" and got["templates"] == ["a photo of a {} texture."]
    assert got["names"] == names and got["labels"] == [5, 6, 7]
    assert got["source"].endswith("+not-the-paper-test-set")


def test_a_hub_copy_without_its_templates_is_refused(tmp_path):
    _hub_cache(tmp_path, "wds_vtab-dtd", ["a", "b"], labels=[0, 1, 0], templates=None)
    code = "from harness.config import DataConfig; from tasks.registry import resolve_task; resolve_task('dtd', DataConfig(source='hub'))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no zeroshot_classification_templates.txt" in out.stderr


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
    with pytest.raises(Problems) as found:
        prepare(config, ExecConfig(data_root=str(tmp_path)))
    assert [p.split(":")[0] for p in found.value.problems[:2]] == ["task imagenet-a", "task imagenet-r"]  # all at once
    assert found.value.problems[2] == "2 task(s) without data; --skip-missing runs the 1 that have it"
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
