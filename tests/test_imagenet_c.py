"""ImageNet-C from the released folders and generated from ImageNet val."""

import pytest

from harness.config import DataConfig
from harness.errors import HarnessError
from harness.seeding import derive_seed
from tasks.base import open_rgb
from tasks.corruptions import as_released_jpeg, corrupt, imagenet_c_view
from tasks.imagenet import imagenet_wnids
from tasks.imagenet_c import IMAGENET_C
from tasks.registry import SUITES, resolve_task
from tests.conftest import write_image

WNIDS = imagenet_wnids()


def test_suite_has_the_15_columns_of_table_2_at_severity_5():
    assert SUITES.get("imagenet-c").tasks == IMAGENET_C
    assert IMAGENET_C[0] == "imagenet-c/brightness/5" and IMAGENET_C[-1] == "imagenet-c/zoom_blur/5"
    assert len(set(IMAGENET_C)) == 15


def test_released_layout_reads_corruption_severity_wnid(tmp_path):
    for severity in (3, 5):
        write_image(tmp_path / "imagenet-c" / "fog" / str(severity) / WNIDS[12] / "ILSVRC2012_val_00000001.JPEG", (90, 90, 90))
    task = resolve_task("imagenet-c/fog/3", data_root=str(tmp_path))
    [ref] = task.samples()
    assert ref.sample_id == f"{WNIDS[12]}/ILSVRC2012_val_00000001.JPEG" and ref.label == 12
    assert task.name == "imagenet-c/fog/3" and task.source == "released" and len(task.classnames) == 1000
    assert resolve_task("imagenet-c/fog", data_root=str(tmp_path)).name == "imagenet-c/fog/5"  # severity 5 by default


def test_generated_corruptions_pair_with_val_ids_and_are_deterministic(tmp_path):
    val = tmp_path / "imagenet" / "val"
    write_image(val / WNIDS[3] / "ILSVRC2012_val_00000007.JPEG", (200, 120, 40), size=300, seed=1)
    data = DataConfig(corruptions="generated")
    task = resolve_task("imagenet-c/gaussian_noise/5", data, data_root=str(tmp_path))
    [ref] = task.samples()
    assert ref.sample_id == f"{WNIDS[3]}/ILSVRC2012_val_00000007.JPEG" and ref.label == 3
    first, again = task.load(ref), task.load(ref)
    assert first.image.size == (224, 224) and first.image.mode == "RGB"
    assert first.content_hash == again.content_hash
    other = resolve_task("imagenet-c/fog/5", data, data_root=str(tmp_path)).load(ref)
    assert other.content_hash != first.content_hash and task.source == "generated"
    # the released recipe: resize 256, centre crop 224, corrupt with the sample's data seed, JPEG 85
    original = open_rgb(val / WNIDS[3] / "ILSVRC2012_val_00000007.JPEG").image
    seed = derive_seed(0, "imagenet-c", "gaussian_noise", "5", ref.sample_id)
    expected = as_released_jpeg(corrupt(imagenet_c_view(original), "gaussian_noise", 5, seed))
    assert first.image.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imagenet-c", "needs a corruption"),
        ("imagenet-c/fgo/5", "did you mean 'fog'"),
        ("imagenet-c/fog/6", "imagenet-c/<corruption>/<severity 1-5>"),
        ("imagenet-c/speckle_noise/5", "unknown ImageNet-C corruption"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, spec, message):
    with pytest.raises(HarnessError, match=message):
        resolve_task(spec, data_root=str(tmp_path))


def test_missing_released_folder_names_the_expected_path(tmp_path):
    (tmp_path / "imagenet-c" / "fog").mkdir(parents=True)
    with pytest.raises(HarnessError, match=str(tmp_path / "imagenet-c")):
        resolve_task("imagenet-c/fog/5", data_root=str(tmp_path))
