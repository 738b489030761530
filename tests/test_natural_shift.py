"""Miniature copies of the natural-shift layouts TPT users have on disk."""

from pathlib import Path

import pytest
from open_clip import IMAGENET_CLASSNAMES

from harness.config import DataConfig
from harness.errors import HarnessError
from tasks.imagenet import imagenet_wnids, wnid_list
from tasks.registry import resolve_task
from tests.conftest import write_image

WNIDS = imagenet_wnids()
A_WNIDS = wnid_list("imagenet_a_wnids")


def _folders(root: Path, names: list[str], per: int = 2, ext: str = "JPEG") -> Path:
    for k, name in enumerate(names):
        for j in range(per):
            write_image(root / name / f"img_{k}_{j}.{ext}", (40 * k % 255, 90, 160), size=24, seed=k * 10 + j)
    return root


def test_shipped_class_lists_match_open_clip():
    assert len(WNIDS) == 1000 and list(WNIDS) == sorted(WNIDS) and len(set(WNIDS)) == 1000
    assert len(IMAGENET_CLASSNAMES) == 1000
    assert WNIDS[0] == "n01440764" and IMAGENET_CLASSNAMES[0] == "tench"
    for name in ("imagenet_a_wnids", "imagenet_r_wnids"):
        subset = wnid_list(name)
        assert len(subset) == 200 and set(subset) <= set(WNIDS) and list(subset) == sorted(subset)


def test_imagenet_val_labels_are_sorted_wnid_indices(tmp_path):
    picked = [WNIDS[0], WNIDS[417], WNIDS[999]]
    _folders(tmp_path / "imagenet" / "val", picked)
    task = resolve_task("imagenet", data_root=str(tmp_path))
    refs = task.samples()
    assert len(refs) == 6 and len(task.classnames) == 1000
    assert {r.sample_id.split("/")[0]: r.label for r in refs} == {WNIDS[0]: 0, WNIDS[417]: 417, WNIDS[999]: 999}
    assert task.classnames[417] == IMAGENET_CLASSNAMES[417] and len(task.templates) == 80


def test_imagenet_a_scores_over_its_200_classes(tmp_path):
    picked = [A_WNIDS[0], A_WNIDS[5], A_WNIDS[199]]
    _folders(tmp_path / "imagenet-adversarial" / "imagenet-a", picked, ext="jpg")  # a public fork's nesting
    task = resolve_task("imagenet-a", data_root=str(tmp_path))
    assert len(task.classnames) == 200
    labels = {r.sample_id.split("/")[0]: r.label for r in task.samples()}
    assert labels == {A_WNIDS[0]: 0, A_WNIDS[5]: 5, A_WNIDS[199]: 199}
    # the subset position maps back to the right ImageNet class name
    assert task.classnames[5] == IMAGENET_CLASSNAMES[WNIDS.index(A_WNIDS[5])]


def test_imagenet_a_refuses_a_folder_outside_its_subset(tmp_path):
    outside = next(w for w in WNIDS if w not in A_WNIDS)
    _folders(tmp_path / "imagenet-a", [A_WNIDS[0], outside])
    with pytest.raises(HarnessError, match=f"not imagenet-a classes: {outside}"):
        resolve_task("imagenet-a", data_root=str(tmp_path))


def test_imagenet_v2_labels_are_folder_integers_not_string_order(tmp_path):
    root = _folders(tmp_path / "imagenetv2-matched-frequency-format-val", ["0", "1", "10", "100", "2", "999"], per=1)
    task = resolve_task("imagenet-v2", data_root=str(tmp_path))
    labels = {r.sample_id.split("/")[0]: r.label for r in task.samples()}
    assert labels == {"0": 0, "1": 1, "10": 10, "100": 100, "2": 2, "999": 999}
    assert task.root == str(root)


def test_imagenet_r_and_sketch_layout_variants(tmp_path):
    r_wnids = wnid_list("imagenet_r_wnids")
    _folders(tmp_path / "imagenet-r", [r_wnids[3]], per=3)
    _folders(tmp_path / "ImageNet-Sketch" / "sketch", [WNIDS[7]], per=2)
    r_task = resolve_task("imagenet-r", data_root=str(tmp_path))
    assert [ref.label for ref in r_task.samples()] == [3, 3, 3] and len(r_task.classnames) == 200
    sketch = resolve_task("imagenet-sketch", data_root=str(tmp_path))
    assert [ref.label for ref in sketch.samples()] == [7, 7]


def test_explicit_folder_overrides_the_data_root(tmp_path):
    _folders(tmp_path / "somewhere" / "ina", [A_WNIDS[1]])
    task = resolve_task(f"imagenet-a:{tmp_path / 'somewhere' / 'ina'}")
    assert [r.label for r in task.samples()] == [1, 1]


def test_missing_data_names_every_path_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("APM_BENCH_DATA", raising=False)
    with pytest.raises(HarnessError) as info:
        resolve_task("imagenet-r", data_root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "imagenet-r") in message and "ImageNet-R" in message and "\n" not in message
    with pytest.raises(HarnessError, match="--data-root or set APM_BENCH_DATA"):
        resolve_task("imagenet-r", data_root=None)


def test_source_flag_errors_and_local_tasks():
    with pytest.raises(HarnessError, match="--source must be one of disk, hub"):
        resolve_task("imagenet-a", DataConfig(source="cloud"))
    with pytest.raises(HarnessError, match="has no hub copy"):
        resolve_task("imagenet-c/fog/5", DataConfig(source="hub"))
    assert resolve_task("synthetic", DataConfig(source="hub")).source == "drawn"  # made here: no source applies
