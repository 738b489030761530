"""Fashion-MNIST and Fashion-MNIST-C from gzip IDX files: a tiny fixture here, the Debian files when installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from tasks import fashion_mnist as fm
from tasks.registry import SUITES, resolve_task


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fixture_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.array([0, 3, 9, 3, 1, 8])
    images = rng.integers(0, 256, (len(labels), 28, 28))
    images[:, 10:18, 10:18] = 255  # something bright to corrupt
    images[5] = images[1]  # the same picture twice: corrupted copies differ only through the per-sample seed
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_clean_task_reads_counts_labels_and_class_names(fixture_root):
    task = resolve_task(f"fashion-mnist:{fixture_root}")
    refs = task.samples()
    assert [r.label for r in refs] == [0, 3, 9, 3, 1, 8]
    assert refs[2].sample_id == "t10k/00002" and task.name == "fashion-mnist" and task.source == "disk"
    assert task.classnames[0] == "T-shirt/top" and task.classnames[9] == "Ankle boot" and len(task.classnames) == 10
    image = task.load(refs[0]).image
    assert image.size == (64, 64) and image.mode == "RGB"  # upscaled: the corruptions need >= 32 px


def test_corrupted_task_is_deterministic_per_sample_and_pairs_with_clean_ids(fixture_root):
    task = resolve_task(f"fashion-mnist-c/gaussian_noise/5:{fixture_root}")
    clean = resolve_task(f"fashion-mnist:{fixture_root}")
    assert task.name == "fashion-mnist-c/gaussian_noise/5" and task.source == "generated"
    assert [r.sample_id for r in task.samples()] == [r.sample_id for r in clean.samples()]
    a, b = task.samples()[1], task.samples()[3]
    assert task.load(a).content_hash == task.load(a).content_hash
    assert task.load(a).content_hash != clean.load(a).content_hash
    assert task.load(a).content_hash != task.load(b).content_hash
    twin = task.samples()[5]  # same pixels as sample 1, another id: another noise draw
    assert clean.load(twin).content_hash == clean.load(a).content_hash
    assert task.load(twin).content_hash != task.load(a).content_hash
    assert resolve_task(f"fashion-mnist-c/fog:{fixture_root}").name == "fashion-mnist-c/fog/5"
    with pytest.raises(HarnessError, match="did you mean 'fog'"):
        resolve_task(f"fashion-mnist-c/fgo/5:{fixture_root}")


def test_suite_has_clean_plus_the_15_corruptions_at_severity_5_and_the_open_set_pair():
    suite = SUITES.get("fashion-mnist-c")
    assert suite.tasks[0] == "fashion-mnist" and len(suite.tasks) == 18
    assert suite.tasks[1] == "fashion-mnist-c/brightness/5" and suite.tasks[15] == "fashion-mnist-c/zoom_blur/5"
    assert suite.tasks[16:] == ("fashion-mnist-open/in", "fashion-mnist-open/out@fashion-mnist-open/in")


def test_the_open_set_halves_split_the_classes_and_score_the_second_over_the_first(fixture_root):
    """Labels 0, 3, 9, 3, 1, 8: in = classes 0-4 relabelled by place (0, 3, 3, 1); out = 9 and 8, as -1."""
    known = resolve_task(f"fashion-mnist-open/in:{fixture_root}")
    unknown = resolve_task(f"fashion-mnist-open/out:{fixture_root}@fashion-mnist-open/in:{fixture_root}")
    assert [r.label for r in known.samples()] == [0, 3, 3, 1] and known.ood_of is None
    assert known.classnames == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
    assert [(r.sample_id, r.label) for r in unknown.samples()] == [("t10k/00002", -1), ("t10k/00005", -1)]
    assert unknown.classnames == known.classnames and unknown.ood_of == known.name == "fashion-mnist-open/in"
    assert unknown.name == "fashion-mnist-open/out@fashion-mnist-open/in" and unknown.templates == known.templates
    assert unknown.load(unknown.samples()[0]).image.size == (64, 64)
    with pytest.raises(HarnessError, match="fashion-mnist-open/in or fashion-mnist-open/out"):
        resolve_task(f"fashion-mnist-open/half:{fixture_root}")


def test_missing_data_names_the_debian_package_and_path(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(HarnessError, match="dataset-fashion-mnist") as err:
        resolve_task("fashion-mnist")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(HarnessError, match="dataset-fashion-mnist"):
        resolve_task(f"fashion-mnist-c/fog/5:{tmp_path}")


def test_a_corrupt_idx_file_is_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 9) + b"abc"))
    with pytest.raises(HarnessError, match="bytes of data"):
        fm.read_idx(tmp_path / "x.gz")


@pytest.mark.skipif(fm.split_files(Path(fm.DEBIAN_ROOT), "test") is None, reason="dataset-fashion-mnist not installed")
def test_the_debian_files_have_10000_test_images_1000_per_class():
    task = resolve_task("fashion-mnist")
    labels = np.array([r.label for r in task.samples()])
    assert len(labels) == 10_000 and np.bincount(labels).tolist() == [1000] * 10
    images, train_labels = fm.load_split(fm.DEBIAN_ROOT, "train")
    assert images.shape == (60_000, 28, 28) and len(train_labels) == 60_000
