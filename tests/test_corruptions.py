"""ImageNet-C corruptions through the real imagecorruptions package: all 15 run, per-seed determinism,
no leak into numpy's global RNG, one-line errors, and the 256/224 view of the released files."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from harness.errors import HarnessError
from tasks.corruptions import (
    CANONICAL_ORDER,
    CORRUPTIONS,
    as_released_jpeg,
    corrupt,
    imagenet_c_view,
)

NOISY = ("gaussian_noise", "shot_noise", "impulse_noise")
"""Pure per-pixel noise: a different seed must give a different image."""


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """224x224 with smooth gradients, a bright square and mid-level noise: every corruption visibly changes it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224]
    arr = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.float64)
    arr += rng.normal(0, 10, arr.shape)
    arr[60:120, 80:160] = 230
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_the_fifteen_in_both_orders() -> None:
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert list(CORRUPTIONS) == sorted(CORRUPTIONS)
    assert set(CANONICAL_ORDER) == set(CORRUPTIONS)
    assert CANONICAL_ORDER[:3] == NOISY and CANONICAL_ORDER[-1] == "jpeg_compression"
    assert not {"speckle_noise", "gaussian_blur", "spatter", "saturate"} & set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_runs_and_is_deterministic(image: Image.Image, name: str) -> None:
    out = corrupt(image, name, 5, seed=7)
    assert out.mode == "RGB" and out.size == image.size
    assert np.asarray(out).dtype == np.uint8
    assert out.tobytes() != image.tobytes()
    assert corrupt(image, name, 5, seed=7).tobytes() == out.tobytes()
    if name in NOISY:
        assert corrupt(image, name, 5, seed=8).tobytes() != out.tobytes()


def test_severity_matters_and_large_seeds_work(image: Image.Image) -> None:
    mild = np.asarray(corrupt(image, "gaussian_noise", 1, seed=3), dtype=np.int32)
    harsh = np.asarray(corrupt(image, "gaussian_noise", 5, seed=3), dtype=np.int32)
    ref = np.asarray(image, dtype=np.int32)
    assert np.abs(harsh - ref).mean() > np.abs(mild - ref).mean()
    big = (1 << 63) - 1  # harness.seeding.derive_seed gives 63-bit seeds
    a = corrupt(image, "shot_noise", 3, seed=big)
    assert a.tobytes() == corrupt(image, "shot_noise", 3, seed=big).tobytes()
    assert a.tobytes() != corrupt(image, "shot_noise", 3, seed=big - 1).tobytes()


def test_global_rng_untouched(image: Image.Image) -> None:
    np.random.seed(12345)
    before = np.random.get_state()
    for name in ("gaussian_noise", "impulse_noise", "frost", "glass_blur", "fog"):
        corrupt(image, name, 2, seed=99)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    np.random.seed(12345)
    expected = np.random.random(4)
    np.random.seed(12345)
    corrupt(image, "snow", 4, seed=1)
    assert np.array_equal(np.random.random(4), expected)


def test_no_pkg_resources_stub_left_behind(image: Image.Image) -> None:
    corrupt(image, "frost", 1, seed=0)  # frost reads the overlay files through the resource_filename shim
    mod = sys.modules.get("pkg_resources")
    assert mod is None or hasattr(mod, "working_set")  # absent, or the real setuptools one
    assert not hasattr(np, "float_") or np.__version__.startswith("1.")  # numpy itself not patched


@pytest.mark.parametrize(
    ("name", "severity", "needle"),
    [("fake_blur", 3, "'fake_blur'"), ("speckle_noise", 3, "'speckle_noise'"), ("fog", 0, "0"), ("fog", 6, "6")],
)
def test_bad_name_or_severity(image: Image.Image, name: str, severity: int, needle: str) -> None:
    with pytest.raises(HarnessError) as info:
        corrupt(image, name, severity, seed=0)
    msg = str(info.value)
    assert "\n" not in msg and needle in msg
    assert ("brightness" in msg) if "corruption '" in msg else ("1, 2, 3, 4, 5" in msg)


def test_grey_input_becomes_rgb() -> None:
    grey = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), mode="L")
    out = corrupt(grey, "contrast", 3, seed=0)
    assert out.mode == "RGB" and out.size == (64, 48)


def test_imagenet_c_view_and_released_jpeg() -> None:
    rng = np.random.default_rng(1)
    src = Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8))
    view = imagenet_c_view(src)
    assert view.size == (224, 224) and view.mode == "RGB"
    assert imagenet_c_view(src.rotate(90, expand=True)).size == (224, 224)
    jpeg = as_released_jpeg(view)
    assert jpeg.size == view.size and jpeg.mode == "RGB" and jpeg.tobytes() != view.tobytes()
    with pytest.raises(HarnessError):
        as_released_jpeg(view, quality=0)


def test_view_matches_torchvision_preprocessing() -> None:
    """make_imagenet_c.py used torchvision's Resize(256) + CenterCrop(224) on PIL images."""
    transforms = pytest.importorskip("torchvision.transforms")
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rng = np.random.default_rng(2)
    for w, h in [(500, 375), (333, 500), (257, 1000)]:
        src = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert imagenet_c_view(src).tobytes() == tf(src).tobytes()
