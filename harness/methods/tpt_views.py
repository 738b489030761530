"""TPT's augmented views (Shu et al., NeurIPS 2022), as its own code makes them: a random resized crop
and a flip of the original image and, on the fine-grained sets, AugMix over TPT's nine geometric and
histogram ops at severity 1 (no colour ops), mixed on the normalised tensors. torchvision's AugMix
differs (other ops, other magnitudes, mixing before normalisation), so it is written out here.

TPT draws from the global numpy and torch RNGs; here every draw comes from generators of the sample's
own, seeded with its seed (a numpy Generator for AugMix, a CPU torch.Generator for the crops and flips),
so a view depends on nothing but the sample: not on other threads making other samples' views at the
same time (seeding torch's process-wide generator from several data threads mixes their streams)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

Preprocess = Callable[[Image.Image], torch.Tensor]
BILINEAR = Image.Resampling.BILINEAR
MIXTURE_WIDTH = 3
MAX_DEPTH = 3
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
"""RandomResizedCrop's default aspect ratios, which TPT keeps."""
FLIP_P = 0.5


def int_parameter(level: float, maxval: float) -> int:
    """An integer magnitude: level is on AugMix's 0..10 scale, so level 10 gives maxval."""
    return int(level * maxval / 10)


def float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10


def _posterize(image: Image.Image, bits: float) -> Image.Image:
    return ImageOps.posterize(image, int(bits))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=BILINEAR)


def _solarize(image: Image.Image, threshold: float) -> Image.Image:
    return ImageOps.solarize(image, int(threshold))


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    """PIL's AFFINE maps output (x, y) to input (a x + b y + c, d x + e y + f); the output keeps the
    image's size, which is the view size (TPT writes 224, its view size)."""
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=BILINEAR)


@dataclass(frozen=True)
class AugmixOp:
    """One AugMix op. `magnitude(level, size)` turns a drawn level into the op's unsigned argument
    (None: the op draws no level); `signed` ops then flip that argument's sign on a coin toss."""

    apply: Callable[[Image.Image, float], Image.Image]
    magnitude: Callable[[float, int], float] | None = None
    signed: bool = False


AUGMIX_OPS: Mapping[str, AugmixOp] = MappingProxyType({
    "autocontrast": AugmixOp(lambda image, _: ImageOps.autocontrast(image)),
    "equalize": AugmixOp(lambda image, _: ImageOps.equalize(image)),
    "posterize": AugmixOp(_posterize, lambda level, _: 4 - int_parameter(level, 4)),
    "rotate": AugmixOp(_rotate, lambda level, _: int_parameter(level, 30), signed=True),
    "solarize": AugmixOp(_solarize, lambda level, _: 256 - int_parameter(level, 256)),
    "shear_x": AugmixOp(lambda image, s: _affine(image, (1, s, 0, 0, 1, 0)),
                        lambda level, _: float_parameter(level, 0.3), signed=True),
    "shear_y": AugmixOp(lambda image, s: _affine(image, (1, 0, 0, s, 1, 0)),
                        lambda level, _: float_parameter(level, 0.3), signed=True),
    "translate_x": AugmixOp(lambda image, t: _affine(image, (1, 0, t, 0, 1, 0)),
                            lambda level, size: int_parameter(level, size / 3), signed=True),
    "translate_y": AugmixOp(lambda image, t: _affine(image, (1, 0, 0, 0, 1, t)),
                            lambda level, size: int_parameter(level, size / 3), signed=True),
})
"""TPT's `augmentations` list, in its order (the list without AugMix's colour, contrast, brightness
and sharpness ops)."""


def op_magnitude(name: str, level: float, size: int) -> float:
    """The unsigned argument op `name` gets at `level` on a size x size view: posterize bits, rotate
    degrees, solarize threshold, shear factor or translation in pixels (0 for ops without a level).
    Translations scale with the view size; TPT fixes it at 224, the paper's ViT-B/16 input side."""
    op = AUGMIX_OPS[name]
    return 0 if op.magnitude is None else op.magnitude(level, size)


@dataclass(frozen=True)
class AppliedOp:
    """An op of a chain with the signed argument it was drawn with, so a chain can be replayed."""

    name: str
    magnitude: float


@dataclass(frozen=True)
class AugmixDraws:
    """Everything one AugMix view drew: the chain weights, the blend with the unaugmented view, and the
    ops of each chain in the order they are applied."""

    weights: tuple[float, ...]
    blend: float
    chains: tuple[tuple[AppliedOp, ...], ...]


def draw_magnitude(name: str, severity: float, size: int, rng: np.random.Generator) -> float:
    """The op's own draws, in TPT's order: a level in [0.1, severity), then the sign for signed ops.
    (TPT tosses the coin with uniform() or random(); both consume one double.)"""
    op = AUGMIX_OPS[name]
    if op.magnitude is None:
        return 0
    value = op.magnitude(rng.uniform(0.1, severity), size)
    return -value if op.signed and rng.uniform() > 0.5 else value


def draw_chain(rng: np.random.Generator, severity: float, size: int) -> tuple[AppliedOp, ...]:
    """A depth of 1..3, then for each step an op picked uniformly with replacement and its draws."""
    names = tuple(AUGMIX_OPS)
    chain = []
    for _ in range(rng.integers(1, MAX_DEPTH + 1)):
        name = names[rng.integers(len(names))]
        chain.append(AppliedOp(name, draw_magnitude(name, severity, size, rng)))
    return tuple(chain)


def run_chain(image: Image.Image, chain: Sequence[AppliedOp]) -> Image.Image:
    for step in chain:
        image = AUGMIX_OPS[step.name].apply(image, step.magnitude)
    return image


def augmix_view(
    x_orig: Image.Image, preprocess: Preprocess, rng: np.random.Generator, severity: float = 1.0
) -> tuple[torch.Tensor, AugmixDraws]:
    """One AugMix view of a cropped, flipped image, and its draws. Weights ~ Dirichlet(1, 1, 1) and
    blend ~ Beta(1, 1) are drawn first (as float32, as TPT does), then the chains; the mix is taken on
    the normalised tensors: blend * x + (1 - blend) * sum_i weight_i * chain_i."""
    weights = np.float32(rng.dirichlet([1.0] * MIXTURE_WIDTH))
    blend = np.float32(rng.beta(1.0, 1.0))
    chains = tuple(draw_chain(rng, severity, x_orig.width) for _ in range(MIXTURE_WIDTH))
    x = preprocess(x_orig)
    mix = torch.zeros_like(x)
    for weight, chain in zip(weights, chains, strict=True):
        mix += float(weight) * preprocess(run_chain(x_orig.copy(), chain))
    draws = AugmixDraws(tuple(float(w) for w in weights), float(blend), chains)
    return float(blend) * x + float(1 - blend) * mix, draws


def preaugment(size: int, min_scale: float = 0.08) -> transforms.Compose:
    """TPT's own crop and flip (torchvision's transforms, drawing from torch's global RNG): the
    reference `crop_and_flip` reproduces draw for draw from a generator of the sample's."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0)),
        transforms.RandomHorizontalFlip(),
    ])


def crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's RandomResizedCrop.get_params (0.29) with every draw taken from
    `generator`, in its order and dtypes: up to 10 tries of an area fraction and a log-uniform aspect
    ratio (float32 draws), the first box that fits placed uniformly (two randint draws); else the
    centre crop clamped to the ratio range. A CPU generator seeded with s draws what torch.manual_seed(s)
    makes the global one draw, so the boxes are those TPT's transform picks."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_and_flip(image: Image.Image, size: int, min_scale: float, generator: torch.Generator) -> Image.Image:
    """TPT's RandomResizedCrop(size, scale=(min_scale, 1)) then RandomHorizontalFlip() on the PIL image
    (PIL's bilinear resize), drawing the box and then the coin from `generator`."""
    i, j, h, w = crop_box(image.width, image.height, (min_scale, 1.0), CROP_RATIO, generator)
    out = TF.resized_crop(image, i, j, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    return TF.hflip(out) if torch.rand(1, generator=generator) < FLIP_P else out


def normaliser(mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])


def make_augmented_views(
    image: Image.Image,
    n: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    augmix: bool,
    min_scale: float = 0.08,
    severity: float = 1.0,
) -> torch.Tensor:
    """(n, 3, size, size) float32 normalised views of `image` (TPT's view 0, the plain centre crop, is
    the caller's). Crops and flips come from a torch.Generator seeded with `seed`, AugMix from a numpy
    Generator seeded with it: no process-wide RNG is read or written, so views made on any number of
    threads at once are the serial ones, and the same crops are drawn with or without AugMix."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    image = image if image.mode == "RGB" else image.convert("RGB")
    preprocess = normaliser(mean, std)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    views = []
    for _ in range(n):
        x_orig = crop_and_flip(image, size, min_scale, generator)
        views.append(augmix_view(x_orig, preprocess, rng, severity)[0] if augmix else preprocess(x_orig))
    return torch.stack(views) if views else torch.empty(0, 3, size, size)
