"""The fine-grained suite on miniature copies of every on-disk layout (TPT's and CoOp's), with real
folder names and real split-file formats: a few tiny images per class, the full class list in the
train split (so class-count checks pass) and only a handful of test entries."""

from __future__ import annotations

import json
import pickle
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

import tasks.finegrained  # noqa: F401  (registers the families)
from harness.errors import HarnessError
from tasks.families import TASKS
from tasks.finegrained import DATASETS, FINE_GRAINED, Dataset, SplitTask
from tasks.request import TaskRequest

BY_NAME = {ds.name: ds for ds in DATASETS}
SPLIT_DATASETS = [ds for ds in DATASETS if ds.split_file.endswith(".json")]
REAL_NAMES = {  # a few real class names per dataset, as CoOp's split files spell them
    "dtd": ["banded", "blotchy", "braided"],
    "oxford-pets": ["abyssinian", "american_bulldog", "american_pit_bull_terrier"],
    "ucf101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery"],
    "sun397": ["abbey", "airplane_cabin", "outdoor apartment_building"],
    "eurosat": ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"],
}
TEST_CLASSES = 3
PER_CLASS = 2


def build(spec: str, root: Path | None, splits_dir: Path | None = None) -> SplitTask:
    request = TaskRequest.parse(spec, data_root=str(root) if root else None,
                                splits_dir=str(splits_dir) if splits_dir else None)
    task = TASKS.get(request.family).build(request)
    assert isinstance(task, SplitTask)
    return task


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed * 37 % 256, seed * 91 % 256, 128)).save(path)


def class_names(ds: Dataset) -> list[str]:
    real = REAL_NAMES.get(ds.name, [])
    return real + [f"class_{i:03d}" for i in range(len(real), ds.n_classes)]


def make_split_dataset(root: Path, ds: Dataset, layout: str, split_at: Path | None = None,
                       names: list[str] | None = None) -> list[list]:
    """Images at root/layout/<class>/<file>; the split file beside the dataset (CoOp) unless
    `split_at` names another folder. Test entries run classes in reverse, to check file order is kept."""
    names = names or class_names(ds)
    image_dir = root / layout
    test = []
    for label in reversed(range(TEST_CLASSES)):
        folder = names[label].replace(" ", "")
        for k in range(PER_CLASS):
            rel = f"{folder}/{folder}_{k}.jpg"
            write_image(image_dir / rel, label * PER_CLASS + k)
            test.append([rel, label, names[label]])
    train = [[f"{n}/train.jpg", i, n] for i, n in enumerate(names)]
    dest = split_at or root / PurePosixPath(layout).parts[0]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ds.split_file).write_text(json.dumps({"train": train, "val": train[:2], "test": test}))
    return test


def check_task(task: SplitTask, ds: Dataset, image_dir: Path, test: list[list]) -> None:
    names = class_names(ds)
    assert task.name == ds.name and task.source == "disk" and task.version == "1"
    assert len(task.classnames) == ds.n_classes
    assert task.classnames[:TEST_CLASSES] == tuple(n.replace("_", " ") for n in names[:TEST_CLASSES])
    assert tuple(task.templates) == (ds.template,) and task.templates.name == f"coop:{ds.name}" and task.protocol == "coop"
    refs = task.samples()
    assert [(r.sample_id, r.label) for r in refs] == [(path, label) for path, label, _ in test]
    assert len(refs) == TEST_CLASSES * PER_CLASS and refs[0].label == TEST_CLASSES - 1
    assert all(Path(r.locator) == image_dir / r.sample_id for r in refs)
    loaded = task.load(refs[0])
    assert loaded.image.mode == "RGB" and loaded.image.size == (8, 8)


@pytest.mark.parametrize("ds", SPLIT_DATASETS, ids=lambda ds: ds.name)
def test_coop_layout_with_split_beside_the_dataset(tmp_path: Path, ds: Dataset):
    coop = ds.layouts[1]
    test = make_split_dataset(tmp_path, ds, coop)
    check_task(build(ds.name, tmp_path), ds, tmp_path / coop, test)


@pytest.mark.parametrize("ds", SPLIT_DATASETS, ids=lambda ds: ds.name)
def test_tpt_layout_with_split_in_tpts_data_splits(tmp_path: Path, ds: Dataset):
    tpt = ds.layouts[0]
    test = make_split_dataset(tmp_path, ds, tpt, split_at=tmp_path / "data" / "data_splits")
    check_task(build(ds.name, tmp_path), ds, tmp_path / tpt, test)


@pytest.mark.parametrize("where", ["beside", "splits-dir", "root", "data_splits"])
def test_split_file_is_found_in_each_place(tmp_path: Path, where: str):
    ds = BY_NAME["oxford-pets"]
    root, elsewhere = tmp_path / "data", tmp_path / "splits"
    split_at = {"beside": None, "splits-dir": elsewhere, "root": root, "data_splits": root / "data_splits"}[where]
    test = make_split_dataset(root, ds, "oxford_pets/images", split_at=split_at)
    task = build("oxford-pets", root, splits_dir=elsewhere if where == "splits-dir" else None)
    check_task(task, ds, root / "oxford_pets/images", test)


def test_splits_dir_wins_over_a_file_beside_the_dataset(tmp_path: Path):
    ds = BY_NAME["dtd"]
    make_split_dataset(tmp_path, ds, "dtd/images")  # beside: test entries of classes 2, 1, 0
    chosen = tmp_path / "mine"
    make_split_dataset(tmp_path, ds, "dtd/images", split_at=chosen)
    data = json.loads((chosen / ds.split_file).read_text())
    data["test"] = data["test"][:1]
    (chosen / ds.split_file).write_text(json.dumps(data))
    assert len(build("dtd", tmp_path, splits_dir=chosen).samples()) == 1


@pytest.mark.parametrize("given", ["dtd", "dtd/images"])
def test_spec_path_may_name_the_dataset_or_the_image_folder(tmp_path: Path, given: str):
    ds = BY_NAME["dtd"]
    test = make_split_dataset(tmp_path / "elsewhere", ds, "dtd/images")
    task = build(f"dtd:{tmp_path / 'elsewhere' / given}", tmp_path / "empty-root")
    check_task(task, ds, tmp_path / "elsewhere/dtd/images", test)


def test_spec_path_overrides_the_data_root(tmp_path: Path):
    ds = BY_NAME["eurosat"]
    make_split_dataset(tmp_path / "root", ds, "eurosat/2750")
    make_split_dataset(tmp_path / "other", ds, "eurosat/2750")
    task = build(f"eurosat:{tmp_path / 'other/eurosat'}", tmp_path / "root")
    assert task.root == str(tmp_path / "other/eurosat/2750")


def test_split_task_pickles(tmp_path: Path):
    make_split_dataset(tmp_path, BY_NAME["caltech101"], "Caltech101", split_at=tmp_path)
    task = build("caltech101", tmp_path)
    again = pickle.loads(pickle.dumps(task))
    assert again == task and again.samples() == task.samples()


def test_missing_folder_names_the_expected_paths(tmp_path: Path):
    with pytest.raises(HarnessError) as err:
        build("dtd", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "DTD/images") in message and str(tmp_path / "dtd/images") in message
    assert message.startswith("task dtd:") and "CoOp" in message and "\n" not in message


def test_missing_data_root_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("APM_BENCH_DATA", raising=False)
    with pytest.raises(HarnessError, match="no data root.*DTD/images"):
        build("dtd", None)


def test_missing_split_file_names_every_place_tried(tmp_path: Path):
    (tmp_path / "oxford_pets/images").mkdir(parents=True)
    with pytest.raises(HarnessError, match="split_zhou_OxfordPets.json not found") as err:
        build("oxford-pets", tmp_path)
    assert str(tmp_path / "oxford_pets/split_zhou_OxfordPets.json") in str(err.value)
    assert str(tmp_path / "data/data_splits/split_zhou_OxfordPets.json") in str(err.value)


def test_wrong_class_count_names_the_split_file(tmp_path: Path):
    ds = BY_NAME["flowers102"]
    make_split_dataset(tmp_path, ds, "oxford_flowers/jpg", names=class_names(ds)[:101])
    with pytest.raises(HarnessError, match=r"split_zhou_OxfordFlowers.json has 101 classes; .* has 102"):
        build("flowers102", tmp_path)


def test_gaps_in_labels_are_an_error(tmp_path: Path):
    ds = BY_NAME["eurosat"]
    make_split_dataset(tmp_path, ds, "eurosat/2750")
    path = tmp_path / "eurosat" / ds.split_file
    data = json.loads(path.read_text())
    doubled = {key: [[p, label * 2, n] for p, label, n in entries] for key, entries in data.items()}
    path.write_text(json.dumps(doubled))
    with pytest.raises(HarnessError, match="labels in .*split_zhou_EuroSAT.json are not contiguous"):
        build("eurosat", tmp_path)


def test_one_label_with_two_names_is_an_error(tmp_path: Path):
    ds = BY_NAME["eurosat"]
    make_split_dataset(tmp_path, ds, "eurosat/2750")
    path = tmp_path / "eurosat" / ds.split_file
    data = json.loads(path.read_text())
    data["test"][0][2] = "Pasture"
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="bad split file .*label 2 is both"):
        build("eurosat", tmp_path)


def test_wrong_image_folder_is_caught_at_build(tmp_path: Path):
    ds = BY_NAME["food101"]
    make_split_dataset(tmp_path, ds, "food-101/images")
    (tmp_path / "food-101/images").rename(tmp_path / "food-101/pictures")
    (tmp_path / "food-101/images").mkdir()
    with pytest.raises(HarnessError, match="first test image .* is missing"):
        build("food101", tmp_path)


AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172", "F-16A/B", "Falcon 2000"] + [f"V{i}" for i in range(95)]


def make_aircraft(folder: Path, test_lines: list[str] | None = None) -> list[str]:
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    lines = test_lines or ["1514522 Cessna 172", "0056978 707-320", "2207216 Falcon 2000", "1340192 F-16A/B"]
    (folder / "images_variant_test.txt").write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        write_image(folder / "images" / f"{line.split(' ')[0]}.jpg", i)
    return lines


@pytest.mark.parametrize("layout", ["fgvc_aircraft", "fgvc-aircraft-2013b/data"])
def test_aircraft_reads_its_variant_files(tmp_path: Path, layout: str):
    make_aircraft(tmp_path / layout)
    task = build("fgvc-aircraft", tmp_path)
    assert task.name == "fgvc-aircraft" and len(task.classnames) == 100
    assert task.classnames[:5] == tuple(AIRCRAFT_VARIANTS[:5])
    assert tuple(task.templates) == ("a photo of a {}, a type of aircraft.",)
    refs = task.samples()
    assert [(r.sample_id, r.label) for r in refs] == [("1514522.jpg", 2), ("0056978.jpg", 0),
                                                      ("2207216.jpg", 4), ("1340192.jpg", 3)]
    assert refs[0].locator == str(tmp_path / layout / "images/1514522.jpg")
    assert task.load(refs[3]).image.size == (8, 8)


def test_aircraft_spec_path_may_name_the_archive_folder(tmp_path: Path):
    make_aircraft(tmp_path / "fgvc-aircraft-2013b/data")
    task = build(f"fgvc-aircraft:{tmp_path / 'fgvc-aircraft-2013b'}", None)
    assert task.root == str(tmp_path / "fgvc-aircraft-2013b/data/images")


def test_aircraft_unknown_variant_names_file_and_line(tmp_path: Path):
    make_aircraft(tmp_path / "fgvc_aircraft", ["0056978 707-320", "1514522 Cessna 999"])
    with pytest.raises(HarnessError, match=r"images_variant_test.txt:2: variant 'Cessna 999'"):
        build("fgvc-aircraft", tmp_path)


def test_aircraft_missing_folder_names_both_layouts(tmp_path: Path):
    with pytest.raises(HarnessError) as err:
        build("fgvc-aircraft", tmp_path)
    assert str(tmp_path / "fgvc_aircraft") in str(err.value)
    assert str(tmp_path / "fgvc-aircraft-2013b/data") in str(err.value)


def test_families_and_table_3_order():
    assert FINE_GRAINED == ("flowers102", "dtd", "oxford-pets", "ucf101", "caltech101", "food101", "sun397",
                            "fgvc-aircraft", "eurosat")
    assert all(name in TASKS for name in (*FINE_GRAINED, "stanford-cars"))
    assert TASKS.get("eurosat").layouts == ("eurosat/2750", "eurosat")  # CoOp's nested folder tried first
    counts = {ds.name: ds.n_classes for ds in DATASETS}
    assert counts == {"flowers102": 102, "dtd": 47, "oxford-pets": 37, "ucf101": 101, "caltech101": 100,
                      "food101": 101, "sun397": 397, "fgvc-aircraft": 100, "eurosat": 10, "stanford-cars": 196}
