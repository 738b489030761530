from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from tasks.base import open_rgb
from tasks.registry import resolve_task
from tasks.synthetic import CLASSNAMES, SyntheticTask


def test_synthetic_task_is_deterministic_and_balanced():
    task = resolve_task("synthetic:3")
    refs = task.samples()
    assert len(refs) == 3 * len(CLASSNAMES) == 36
    assert [r.label for r in refs].count(0) == 3
    assert len({r.sample_id for r in refs}) == 36
    again = SyntheticTask(per_class=3, name="synthetic:3")
    a, b = task.load(refs[4]), again.load(refs[4])
    assert a.content_hash == b.content_hash and a.image.tobytes() == b.image.tobytes()
    assert task.load(refs[5]).content_hash != a.content_hash
    assert a.image.mode == "RGB" and a.image.size == (128, 128)


def test_synthetic_colours_are_what_the_class_says():
    task = SyntheticTask(per_class=1)
    for ref in task.samples():
        img = task.load(ref).image
        colour = task.classnames[ref.label].split()[0]
        pixels = np.asarray(img).reshape(-1, 3).astype(int)
        mean = pixels[pixels.max(1) - pixels.min(1) > 90].mean(0)  # saturated shape pixels, not background
        channel = {"red": 0, "green": 1, "blue": 2}.get(colour)
        if channel is None:  # yellow: red and green high, blue low
            assert mean[0] > 150 and mean[1] > 150 and mean[2] < 100
        else:
            assert mean.argmax() == channel


def test_imagefolder_classes_labels_and_stable_ids(image_folder: Path):
    task = resolve_task(f"imagefolder:{image_folder}")
    assert task.classnames == ("golden retriever", "tabby", "zebra")
    refs = task.samples()
    assert len(refs) == 9
    assert refs[2].sample_id == "golden_retriever/nested/img2.png"
    assert {r.label for r in refs if r.sample_id.startswith("zebra/")} == {2}
    assert task.name == "imagefolder:folder"
    assert task.load(refs[0]).image.size == (40, 40)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(HarnessError, match=str(tmp_path / "nope")):
        resolve_task(f"imagefolder:{tmp_path / 'nope'}")


def test_unknown_task_suggests_a_name():
    with pytest.raises(HarnessError, match="did you mean 'synthetic'"):
        resolve_task("synthetc")


def test_undecodable_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.jpg"):
        open_rgb(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        open_rgb(empty)
