"""`apm-bench imagenet-c build`: ImageNet-C written once from ImageNet val, through the real command on a
local Ray. The built files must be the generated task's JPEGs byte for byte, read back as `generated`
with the same sample ids and pixels, resume file by file, and report a bad val image by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import cli
from harness.config import DataConfig
from harness.errors import MissingData
from tasks.base import content_hash, open_rgb
from tasks.imagenet import imagenet_wnids
from tasks.imagenet_c import MARKER, generated_jpeg, update_marker
from tasks.registry import resolve_task
from tests.conftest import write_image

BUILT = ("fog", "gaussian_noise")
CLASSES = (0, 7, 42)
"""Class indices of the tiny val: wnid folders that are not neighbours, to check labels follow wnids."""


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    """<root>/imagenet/val/<wnid>/ILSVRC2012_val_*.JPEG: 3 classes, 2 non-square images each."""
    wnids = imagenet_wnids()
    for i, index in enumerate(CLASSES):
        for j in range(2):
            path = tmp_path / "imagenet" / "val" / wnids[index] / f"ILSVRC2012_val_{10 * i + j + 1:08d}.JPEG"
            write_image(path, (60 + 70 * i, 200 - 50 * j, 90), size=96 + 16 * j, seed=10 * i + j)
    return tmp_path


def build(root: Path, *extra: str) -> Result:
    """The real command, in-process: the session's Ray instance is reused (ray_session joins it)."""
    args = ["imagenet-c", "build", "--data-root", str(root), "--corruption", ",".join(BUILT), "--no-progress", *extra]
    return CliRunner().invoke(cli.app, args)


def built_files(out: Path) -> dict[Path, int]:
    """Every file under the output folder (the marker too) -> its mtime in ns."""
    return {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_build_writes_the_released_layout_byte_for_byte_and_reads_back_as_generated(data_root, ray_local):
    done = build(data_root)
    assert done.exit_code == 0, done.output + done.stderr
    assert "12 written, 0 skipped (already there), 0 failed" in done.stdout
    out = data_root / "imagenet-c"
    marker = json.loads((out / MARKER).read_text())
    assert marker["corruptions"] == {"fog": [5], "gaussian_noise": [5]} and marker["unfinished"] == []
    assert "imagecorruptions 1.1.2" in marker["recipe"] and marker["imagecorruptions"] == "1.1.2"
    assert marker["val"] == str(data_root / "imagenet" / "val") and marker["failed"] == {}

    val = resolve_task("imagenet", data_root=str(data_root))
    assert len(val.samples()) == 6
    for corruption in BUILT:
        folder = out / corruption / "5"
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
            sorted(r.sample_id for r in val.samples())  # <wnid>/<same file name as the val image>, nothing else
        generated = resolve_task(f"imagenet-c/{corruption}/5", DataConfig(corruptions="generated"), data_root=str(data_root))
        released = resolve_task(f"imagenet-c/{corruption}/5", data_root=str(data_root))
        assert (generated.source, released.source) == ("generated", "generated")
        assert [(r.sample_id, r.label) for r in released.samples()] == [(r.sample_id, r.label) for r in generated.samples()]
        assert {r.label for r in released.samples()} == set(CLASSES)
        for ref, gen_ref in zip(released.samples(), generated.samples()):
            data = Path(ref.locator).read_bytes()
            assert data == generated_jpeg(open_rgb(gen_ref.locator).image, corruption, 5, ref.sample_id)
            from_file, on_the_fly = released.load(ref), generated.load(gen_ref)
            assert from_file.image.size == (224, 224)
            assert from_file.image.tobytes() == on_the_fly.image.tobytes()
            assert from_file.content_hash == on_the_fly.content_hash == content_hash(data)


def test_folders_without_the_marker_stay_released(data_root, ray_local):
    write_image(data_root / "imagenet-c" / "fog" / "5" / imagenet_wnids()[0] / "x.JPEG", (90, 90, 90))
    assert resolve_task("imagenet-c/fog/5", data_root=str(data_root)).source == "released"
    done = build(data_root)  # into a folder that holds ImageNet-C data it did not write: refused
    assert done.exit_code != 0 and "no GENERATED.json" in str(done.exception)
    assert not (data_root / "imagenet-c" / MARKER).exists()


def test_an_interrupted_build_resumes_file_by_file(data_root, ray_local):
    assert build(data_root).exit_code == 0
    out = data_root / "imagenet-c"
    before = built_files(out)
    gone = out / "gaussian_noise" / "5" / imagenet_wnids()[7] / "ILSVRC2012_val_00000012.JPEG"
    expected = gone.read_bytes()
    gone.unlink()
    done = build(data_root)
    assert done.exit_code == 0, done.output + done.stderr
    assert "1 written, 11 skipped (already there), 0 failed" in done.stdout
    after = built_files(out)
    assert gone.read_bytes() == expected
    assert set(after) == set(before)  # no temporary file left, nothing new
    assert {p: t for p, t in after.items() if p != gone} == {p: t for p, t in before.items() if p != gone}


def test_a_corrupt_val_image_is_reported_by_name_and_the_rest_is_built(data_root, ray_local):
    bad = data_root / "imagenet" / "val" / imagenet_wnids()[42] / "ILSVRC2012_val_00000099.JPEG"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    done = build(data_root)
    assert done.exit_code == 3
    assert "12 written, 0 skipped (already there), 2 failed" in done.stdout
    assert f"failed: cannot decode image {bad}" in done.stderr
    for corruption in BUILT:
        assert len(list((data_root / "imagenet-c" / corruption / "5").rglob("*.JPEG"))) == 6
    failed = json.loads((data_root / "imagenet-c" / MARKER).read_text())["failed"]
    assert sorted(failed) == [f"{c}/5/{imagenet_wnids()[42]}/{bad.name}" for c in BUILT]


def test_a_pair_the_marker_lists_as_unfinished_is_refused_with_the_command_that_finishes_it(data_root):
    out = data_root / "imagenet-c"
    update_marker(out, str(data_root / "imagenet" / "val"), [("frost", 3)], None, None)  # as a build starts
    write_image(out / "frost" / "3" / imagenet_wnids()[0] / "ILSVRC2012_val_00000001.JPEG", (90, 90, 90))
    assert json.loads((out / MARKER).read_text())["unfinished"] == ["frost/3"]
    with pytest.raises(MissingData, match="unfinished build .* apm-bench imagenet-c build --out .* --corruption frost --severity 3"):
        resolve_task("imagenet-c/frost/3", data_root=str(data_root))
