"""A task the harness draws itself: coloured shapes whose class names a text prompt can describe.
Deterministic from (seed, sample id), so it needs no data on disk and no download."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from harness.errors import HarnessError
from harness.seeding import derive_seed
from tasks.base import LoadedImage, SampleRef, Task, content_hash
from tasks.families import TASKS, TaskFamily
from tasks.request import TaskRequest
from tasks.templates import OPENAI_IMAGENET, TemplateSet

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
CLASSNAMES: tuple[str, ...] = tuple(f"{c} {s}" for c, s in itertools.product(COLOURS, SHAPES))


@dataclass(frozen=True)
class SyntheticTask(Task):
    per_class: int = 4
    seed: int = 0
    size: int = 128
    name: str = "synthetic"
    version: str = "1"
    classnames: tuple[str, ...] = CLASSNAMES
    templates: TemplateSet = OPENAI_IMAGENET
    source: str = "drawn"
    protocol: str = "apm-bench"

    def samples(self) -> Sequence[SampleRef]:
        return [
            SampleRef(f"{cls.replace(' ', '_')}/{i:05d}", label, str(i))
            for label, cls in enumerate(self.classnames)
            for i in range(self.per_class)
        ]

    def load(self, ref: SampleRef) -> LoadedImage:
        img = draw_shape(self.classnames[ref.label], derive_seed(self.seed, self.name, ref.sample_id), self.size)
        return LoadedImage(img, content_hash(img.tobytes()))


def draw_shape(classname: str, seed: int, size: int) -> Image.Image:
    """One shape of the named colour on a noisy light background, at a random place, size and angle."""
    colour_name, shape = classname.split(" ")
    rng = np.random.default_rng(seed)
    background = rng.integers(200, 250, size=3)
    noise = rng.normal(0, 6, size=(size, size, 3))
    img = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    jitter = rng.integers(-12, 13, size=3)
    colour = tuple(int(v) for v in np.clip(np.array(COLOURS[colour_name]) + jitter, 0, 255))
    radius = size * rng.uniform(0.22, 0.36)
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        sides = 4 if shape == "square" else 3
        draw.regular_polygon((cx, cy, radius), sides, rotation=float(rng.uniform(0, 360)), fill=colour)
    return img


def build(request: TaskRequest) -> SyntheticTask:
    if request.arg is None:
        return SyntheticTask()
    if not request.arg.isdigit() or int(request.arg) < 1:
        raise HarnessError(f"task {request.spec}: the argument is the number of images per class (a positive integer)")
    return SyntheticTask(per_class=int(request.arg), name=f"synthetic:{request.arg}")


TASKS.add("synthetic", TaskFamily(build, "coloured shapes drawn by the harness (12 classes); synthetic:N for N per class", local=True))
