"""Out-of-distribution tasks (tasks.open_set): OOD@ID specs, `--ood ID:OOD`, MCM's folder layouts, and
the rows a worker writes for them (label -1, no right class, `ood_of`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import paired_tasks
from conftest import write_image
from harness.config import RunConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from tasks.open_set import ood_pair
from tasks.registry import TASKS, resolve_task


def test_ood_pairs_split_where_a_task_family_begins():
    families = set(TASKS.names())
    assert ood_pair("imagenet:mcm-inaturalist", families) == ("imagenet", "mcm-inaturalist")
    assert ood_pair("imagefolder:/a:b:imagefolder:/c", families) == ("imagefolder:/a:b", "imagefolder:/c")
    assert ood_pair("fashion-mnist-open/in:fashion-mnist-open/out", families) == (
        "fashion-mnist-open/in", "fashion-mnist-open/out")
    problems: list[str] = []
    assert paired_tasks(problems, "imagenet:mcm-sun") == ("imagenet", "mcm-sun@imagenet")
    assert paired_tasks(problems, "imagenet") == () and "--ood imagenet" in problems[0]
    with pytest.raises(HarnessError, match="unknown task 'nosuch'"):
        ood_pair("fashion-mnist-open/in:nosuch", families)
    with pytest.raises(HarnessError, match="cannot be out of its own distribution"):
        ood_pair("fashion-mnist-open/in:fashion-mnist-open/in", families)


def test_ood_data_may_not_hold_a_class_of_the_id_task():
    """fog's ten classes include the open set's five `out` ones: those images are not unknown to it."""
    with pytest.raises(HarnessError, match=r"5 of its classes are also fashion-mnist-c/fog/5's \(Ankle boot, Bag, Sandal"):
        resolve_task("fashion-mnist-open/out@fashion-mnist-c/fog/5")


def test_mcm_sets_read_their_layouts_under_the_data_root_and_need_an_id_task(tmp_path, image_folder):
    root = tmp_path / "datasets"
    for i in range(3):
        write_image(root / "iNaturalist" / "images" / f"{i}.jpg", (0, 120, 0), seed=i)
    write_image(root / "dtd" / "images" / "banded" / "banded_0001.jpg", (90, 90, 90))
    write_image(root / "dtd" / "images" / "dotted" / "dotted_0002.jpg", (10, 90, 90))
    known = f"imagefolder:{image_folder}"
    plants = resolve_task(f"mcm-inaturalist@{known}", data_root=str(root))
    assert plants.name == "mcm-inaturalist@imagefolder:folder" and plants.ood_of == "imagefolder:folder"
    assert plants.classnames == ("golden retriever", "tabby", "zebra") and plants.protocol == "folder"
    assert [(r.sample_id, r.label) for r in plants.samples()] == [(f"images/{i}.jpg", -1) for i in range(3)]
    textures = resolve_task(f"mcm-textures@{known}", data_root=str(root))
    assert [r.sample_id for r in textures.samples()] == ["banded/banded_0001.jpg", "dotted/dotted_0002.jpg"]
    with pytest.raises(HarnessError, match=r"mcm-sun@imagenet \(or --ood imagenet:mcm-sun\)"):
        resolve_task("mcm-sun", data_root=str(root))
    with pytest.raises(HarnessError, match="SUN"):
        resolve_task(f"mcm-sun@{known}", data_root=str(root))  # not there: the error says what it looked for
    with pytest.raises(HarnessError, match="with one '@'"):
        resolve_task(f"mcm-textures@mcm-inaturalist@{known}", data_root=str(root))


def test_a_worker_scores_ood_samples_over_the_id_classes_without_a_right_answer(image_folder, tmp_path):
    for i in range(4):
        write_image(tmp_path / "ood" / "images" / f"{i}.png", (250, 0, 250), seed=i)
    spec = f"imagefolder:{tmp_path / 'ood'}@imagefolder:{image_folder}"
    config = RunConfig(tasks=(f"imagefolder:{image_folder}", spec), methods=("zeroshot", "tpt"))
    tasks = {t.name: t for t in (resolve_task(s) for s in config.tasks)}
    worker = ShardWorker(config, tasks, RunIdentity("r", config.fingerprint(), "c"))
    rows = [r for shard in plan_shards(list(tasks.values()), 16, None, 0) for r in worker.rows(shard)]
    unknown = [r for r in rows if r.ood_of]
    assert len(unknown) == 8 and {r.task for r in unknown} == {"imagefolder:ood@imagefolder:folder"}
    assert all(r.label == -1 and r.correct is None and r.top5_correct is None and r.error is None for r in unknown)
    assert all(r.ood_of == "imagefolder:folder" and r.n_classes == 3 and 0 < r.msp <= 1 for r in unknown)
    known = [r for r in rows if not r.ood_of]
    assert len(known) == 18 and all(r.correct is not None and r.mcm is not None for r in known)


def test_a_run_names_the_pairing_in_its_config(tmp_path: Path):
    config = RunConfig(tasks=("fashion-mnist-open/in", "fashion-mnist-open/out@fashion-mnist-open/in"), methods=("zeroshot",))
    assert RunConfig.from_dict(config.to_dict()).tasks == config.tasks
