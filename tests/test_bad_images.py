"""Every kind of bad image either decodes to the right RGB picture or becomes error rows naming the
file, and the shard completes."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from harness.config import DataConfig, RunConfig
from harness.methods.configs import ApmConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from tasks.base import open_rgb
from tasks.registry import resolve_task


def _decodable(folder):
    """kind -> (file, expected RGB size)"""
    made = {}
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:, :25] = (250, 10, 10)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    made["cmyk"] = ("cmyk.jpg", (50, 30))
    Image.fromarray((np.arange(40 * 20).reshape(20, 40) * 80).astype(np.uint16)).save(folder / "sixteen.png")
    made["16-bit"] = ("sixteen.png", (40, 20))
    Image.fromarray(np.full((12, 12), 77, np.uint8), "L").save(folder / "grey.png")
    made["greyscale"] = ("grey.png", (12, 12))
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    made["palette+transparency"] = ("palette.png", (16, 16))
    exif = Image.new("RGB", (60, 20), (0, 0, 200)).getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (60, 20), (0, 0, 200)).save(folder / "rotated.jpg", exif=exif)
    made["exif-tagged"] = ("rotated.jpg", (60, 20))  # pixels as stored, as the reference loaders read them
    return made


def _broken(folder):
    (folder / "empty.jpg").write_bytes(b"")
    full = folder / "full.jpg"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(full, quality=95)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[:200])
    full.unlink()
    (folder / "not-an-image.png").write_bytes(b"<html>this is not a PNG</html>")
    Image.new("1", (15000, 15000)).save(folder / "bomb.png")  # 225 MP: over PIL's decompression-bomb limit
    return {"empty.jpg": "empty file", "truncated.jpg": "truncated", "not-an-image.png": "cannot identify",
            "bomb.png": "decompression bomb"}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good, broken = root / "good", root / "broken"
    good.mkdir()
    broken.mkdir()
    return root, _decodable(good), _broken(broken)


def test_odd_but_valid_images_decode_to_rgb(bad_folder):
    root, made, _ = bad_folder
    for kind, (name, size) in made.items():
        image = open_rgb(root / "good" / name).image
        assert image.mode == "RGB" and image.size == size, kind
    assert open_rgb(root / "good" / "cmyk.jpg").image.getpixel((5, 5))[0] > 200  # still red
    sixteen = np.asarray(open_rgb(root / "good" / "sixteen.png").image)
    assert sixteen.max() > 200 and sixteen.min() < 10  # scaled down to 8 bits, not clipped to white
    assert open_rgb(root / "good" / "palette.png").image.getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_applied_only_when_asked(bad_folder, tmp_path):
    root, _, _ = bad_folder
    tagged = root / "good" / "rotated.jpg"
    assert open_rgb(tagged).image.size == (60, 20)  # TPT, CLIP_benchmark, torchvision: Image.open(f).convert("RGB")
    assert open_rgb(tagged, exif_transpose=True).image.size == (20, 60)
    folder = tmp_path / "folder" / "cls"
    folder.mkdir(parents=True)
    folder.joinpath("a.jpg").write_bytes(tagged.read_bytes())
    plain = resolve_task(f"imagefolder:{folder.parent}")
    upright = resolve_task(f"imagefolder:{folder.parent}", DataConfig(exif_transpose=True))
    ref = plain.samples()[0]
    assert plain.load(ref).image.size == (60, 20) and upright.load(ref).image.size == (20, 60)
    base = RunConfig(tasks=("synthetic",), methods=("zeroshot",))
    assert base.fingerprint() != dataclasses.replace(base, data=DataConfig(exif_transpose=True)).fingerprint()


def test_broken_files_become_error_rows_naming_file_and_reason(bad_folder):
    root, made, broken = bad_folder
    task = resolve_task(f"imagefolder:{root}")
    config = RunConfig(tasks=(f"imagefolder:{root}",), methods=("zeroshot", "apm"), settings=(("apm", ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=2)),))
    worker = ShardWorker(config, {task.name: task}, RunIdentity("r", "f", "c"))
    rows = worker.process(plan_shards([task], 100)[0]).to_pylist()
    assert len(rows) == 2 * (len(made) + len(broken))
    for name, reason in broken.items():
        errors = [r["error"] for r in rows if r["sample_id"] == f"broken/{name}"]
        assert len(errors) == 2 and all(name in e and reason in e.lower() for e in errors), errors
    assert all(r["error"] is None for r in rows if r["sample_id"].startswith("good/"))
