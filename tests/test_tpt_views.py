"""TPT's augmented views: its nine AugMix ops and their magnitudes at severity 1, what each op does to
an image, the mixing formula and draw order, per-seed determinism, and the plain crop-and-flip views."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from harness.methods.tpt_views import (
    AUGMIX_OPS,
    augmix_view,
    draw_magnitude,
    make_augmented_views,
    normaliser,
    op_magnitude,
    preaugment,
)

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
TPT_OPS = ["autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
           "translate_y"]
SIGNED = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
LEVELS = np.random.default_rng(0).uniform(0.1, 1.0, 2000)  # TPT's level draws at severity 1


def _noise(size: int = 32, low: int = 0, high: int = 256, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (size, size, 3), dtype=np.uint8))


def _texture(size: int = 64) -> Image.Image:
    """Sharp checks in two channels and a ramp in the third: every op leaves a visible trace."""
    y, x = np.indices((size, size))
    checks = ((x // 4 + y // 4) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([checks, 255 - checks, (x * 4 % 256).astype(np.uint8)], -1))


def _apply(name: str, image: Image.Image, magnitude: float) -> np.ndarray:
    return np.asarray(AUGMIX_OPS[name].apply(image, magnitude)).astype(int)


def test_op_list_is_tpts_nine_ops_in_order():
    assert list(AUGMIX_OPS) == TPT_OPS  # no color, contrast, brightness or sharpness


def test_rotate_is_0_to_2_degrees_with_both_signs():
    assert {op_magnitude("rotate", level, 224) for level in LEVELS} == {0, 1, 2}
    rng = np.random.default_rng(1)
    drawn = [draw_magnitude("rotate", 1.0, 224, rng) for _ in range(500)]
    assert set(drawn) == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize("size,largest", [(224, 7), (448, 14)])
def test_translation_is_up_to_a_thirtieth_of_the_view_size(size, largest):
    pixels = np.array([op_magnitude("translate_x", level, size) for level in LEVELS])
    assert pixels.min() >= 0 and pixels.max() == largest == op_magnitude("translate_y", 0.999, size)
    assert (pixels > 0).mean() > 0.9
    rng = np.random.default_rng(2)
    drawn = [draw_magnitude("translate_y", 1.0, size, rng) for _ in range(500)]
    assert min(drawn) < 0 < max(drawn) and max(abs(t) for t in drawn) <= largest


def test_solarize_posterize_and_shear_ranges():
    thresholds = {op_magnitude("solarize", level, 224) for level in LEVELS}
    assert min(thresholds) >= 231 and max(thresholds) <= 254 and len(thresholds) > 15
    assert {op_magnitude("posterize", level, 224) for level in LEVELS} == {4}
    for name in ("shear_x", "shear_y"):
        shears = np.array([op_magnitude(name, level, 224) for level in LEVELS])
        assert shears.min() >= 0.003 and shears.max() < 0.03 and shears.max() > 0.029
    assert op_magnitude("autocontrast", 0.5, 224) == op_magnitude("equalize", 0.5, 224) == 0


@pytest.mark.parametrize("name,axis", [("translate_x", 1), ("translate_y", 0)])
@pytest.mark.parametrize("t", [3, -2])
def test_translation_shifts_by_exactly_t_pixels(name, axis, t):
    image = _noise(32)
    shifted, rolled = _apply(name, image, t), np.roll(np.asarray(image).astype(int), -t, axis=axis)
    valid = [slice(None)] * 2
    valid[axis] = slice(0, 32 - t) if t > 0 else slice(-t, 32)  # PIL AFFINE: out(x, y) = in(x + t, y)
    np.testing.assert_array_equal(shifted[tuple(valid)], rolled[tuple(valid)])
    assert not np.array_equal(shifted, np.asarray(image).astype(int))


@pytest.mark.parametrize("degrees", [1, 2, -2])
def test_rotate_is_pils_bilinear_rotation(degrees):
    image = _texture(48)
    expected = np.asarray(image.rotate(degrees, resample=Image.Resampling.BILINEAR)).astype(int)
    np.testing.assert_array_equal(_apply("rotate", image, degrees), expected)
    assert np.abs(expected - np.asarray(image).astype(int)).mean() > 1
    np.testing.assert_array_equal(_apply("rotate", image, 0), np.asarray(image))


@pytest.mark.parametrize("threshold", [231, 254])
def test_solarize_inverts_exactly_the_pixels_at_or_above_the_threshold(threshold):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([values, values.T, 255 - values], -1))
    pixels = np.asarray(image).astype(int)
    np.testing.assert_array_equal(_apply("solarize", image, threshold),
                                  np.where(pixels >= threshold, 255 - pixels, pixels))


def test_posterize_to_four_bits_clears_the_low_four_bits():
    image = _noise(32)
    np.testing.assert_array_equal(_apply("posterize", image, 4), np.asarray(image) & 0xF0)


@pytest.mark.parametrize("name", ["shear_x", "shear_y"])
@pytest.mark.parametrize("shear", [0.03, -0.03])
def test_shear_changes_the_image(name, shear):
    image = _texture(48)
    assert np.abs(_apply(name, image, shear) - np.asarray(image).astype(int)).mean() > 1
    np.testing.assert_array_equal(_apply(name, image, 0.0), np.asarray(image))


@pytest.mark.parametrize("name", ["autocontrast", "equalize"])
def test_histogram_ops_stretch_a_low_contrast_image_to_full_range(name):
    out = _apply(name, _noise(32, low=100, high=141), 0)
    assert (out.min(axis=(0, 1)) == 0).all() and (out.max(axis=(0, 1)) == 255).all()


def test_augmix_views_differ_clearly_from_plain_views_on_the_same_crops():
    """Guards against an AugMix that barely changes the views (e.g. torchvision's at severity 1, whose
    geometric ops have zero magnitude): the same seed gives the same crops, so the gap is AugMix alone."""
    gaps = [(make_augmented_views(_texture(), 8, 32, MEAN, STD, seed, augmix=True)
             - make_augmented_views(_texture(), 8, 32, MEAN, STD, seed, augmix=False)).abs().mean().item()
            for seed in range(4)]
    assert min(gaps) > 0 and np.mean(gaps) > 0.05


def _crop(seed: int, size: int = 32) -> Image.Image:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return preaugment(size)(_texture())


@pytest.mark.parametrize("seed", range(6))
def test_augmix_view_is_the_blend_of_its_chains(seed):
    x_orig, preprocess = _crop(seed), normaliser(MEAN, STD)
    view, draws = augmix_view(x_orig, preprocess, np.random.default_rng(seed))
    assert len(draws.weights) == len(draws.chains) == 3 and sum(draws.weights) == pytest.approx(1, abs=1e-6)
    assert 0 <= draws.blend <= 1 and all(1 <= len(chain) <= 3 for chain in draws.chains)
    mix = torch.zeros_like(view)
    for weight, chain in zip(draws.weights, draws.chains, strict=True):
        image = x_orig.copy()
        for step in chain:
            image = AUGMIX_OPS[step.name].apply(image, step.magnitude)
        mix += weight * preprocess(image)
    expected = draws.blend * preprocess(x_orig) + (1 - draws.blend) * mix
    torch.testing.assert_close(view, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_augmix_draws_follow_tpts_order(seed):
    """Weights, blend, then per chain its depth, then per op its pick, level and (if signed) sign."""
    _, draws = augmix_view(_crop(seed), normaliser(MEAN, STD), np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    assert draws.weights == tuple(float(w) for w in np.float32(rng.dirichlet([1.0, 1.0, 1.0])))
    assert draws.blend == float(np.float32(rng.beta(1.0, 1.0)))
    for chain in draws.chains:
        assert len(chain) == rng.integers(1, 4)
        for step in chain:
            assert step.name == TPT_OPS[rng.integers(9)]
            if step.name in ("autocontrast", "equalize"):
                continue
            magnitude = op_magnitude(step.name, rng.uniform(0.1, 1.0), 32)
            if step.name in SIGNED and rng.uniform() > 0.5:
                magnitude = -magnitude
            assert step.magnitude == magnitude


def test_augmented_views_are_augmix_views_of_the_seeded_crops():
    views = make_augmented_views(_texture(), 4, 32, MEAN, STD, seed=5, augmix=True)
    rng, preprocess = np.random.default_rng(5), normaliser(MEAN, STD)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        crop = preaugment(32)
        expected = torch.stack([augmix_view(crop(_texture()), preprocess, rng)[0] for _ in range(4)])
    torch.testing.assert_close(views, expected, rtol=0, atol=0)


@pytest.mark.parametrize("augmix", [False, True])
def test_views_are_seeded_and_leave_the_global_rngs_alone(augmix):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    views = make_augmented_views(_texture(), 6, 32, MEAN, STD, seed=3, augmix=augmix)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(views, make_augmented_views(_texture(), 6, 32, MEAN, STD, seed=3, augmix=augmix))
    assert not torch.equal(views, make_augmented_views(_texture(), 6, 32, MEAN, STD, seed=4, augmix=augmix))
    assert len({v.numpy().tobytes() for v in views}) == 6


@pytest.mark.parametrize("min_scale", [0.08, 0.5])
def test_plain_views_are_normalised_flipped_crops(min_scale):
    views = make_augmented_views(_texture(), 5, 40, MEAN, STD, seed=7, augmix=False, min_scale=min_scale)
    assert views.shape == (5, 3, 40, 40) and views.dtype == torch.float32
    reference = transforms.Compose([
        transforms.RandomResizedCrop(40, scale=(min_scale, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = torch.stack([reference(_texture()) for _ in range(5)])
    assert torch.equal(views, expected)
    assert make_augmented_views(_texture(), 0, 40, MEAN, STD, seed=7, augmix=True).shape == (0, 3, 40, 40)
