"""Fashion-MNIST (Xiao et al., 2017) as a real, offline shift benchmark: `fashion-mnist` is the clean
10,000-image test set and `fashion-mnist-c/<corruption>/<severity>` the same images under one of the
15 ImageNet-C corruptions (tasks/corruptions.py), applied in the worker with a seed that depends only
on (corruption, severity, sample id), so every run sees the same pixels.

Data: the gzip IDX files of Debian's `dataset-fashion-mnist` package under
/usr/share/datasets/fashion-mnist/, or `<data root>/fashion-mnist/`, or `fashion-mnist:PATH`.

Image size: the 28x28 greyscale digits are upscaled (bicubic) to 64x64 RGB before anything else,
clean and corrupted alike. The corruptions need at least 32 px (their kernels, frost crops and fog
fractal assume it), and 64 px is the input side of the harness's tiny teachers (`apm-mini`,
`apm-tiny`), so the teacher sees exactly the corrupted pixels, with no further resize to average the
noise away. The severity constants are ImageNet-C's, chosen in pixels for 224 px images, so blur-type
corruptions are relatively stronger here than in ImageNet-C at the same severity."""

from __future__ import annotations

import functools
import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness.errors import HarnessError, MissingData
from tasks.base import LoadedImage, SampleRef, Task, content_hash
from tasks.corruptions import CORRUPTIONS, corrupt_sample
from tasks.families import TASKS, TaskFamily
from tasks.imagenet_c import DEFAULT_SEVERITY
from tasks.imagenet_c import parse as parse_corruption
from tasks.planned import KnownSize, PlannedTask
from tasks.request import TaskRequest, local_path
from tasks.templates import SINGLE_TEMPLATE, TemplateSet

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
LAYOUT = "fashion-mnist"
CLASSNAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
TEMPLATES = TemplateSet("fashion-mnist-8", (
    SINGLE_TEMPLATE,
    "a photo of the {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a grayscale product photo of a {}.",
    "a small photo of a {}.",
    "a centred photo of a {}.",
    "a picture of a {}.",
))
"""The task's ensemble (`ensemble`, APM); `apm-bench teacher train` captions its images with these."""
SPLITS = {"test": "t10k", "train": "train"}
SIZE = KnownSize(10_000, "the Fashion-MNIST test set, t10k (Xiao et al., 2017)")
"""The clean task's size, and every corruption's (the same images)."""
IMAGE_SIZE = 64


def split_files(root: Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) of a split under root, gzip or uncompressed; None when either is missing."""
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        names = (f"{SPLITS[split]}-{kind}.gz", f"{SPLITS[split]}-{kind}")
        path = next((root / n for n in names if (root / n).is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def find_root(request: TaskRequest | None = None, split: str = "test", path: str | None = None) -> Path:
    """`spec:PATH` (or `path`), else <data root>/fashion-mnist, else the Debian package's folder."""
    explicit = path or (request.arg if request else None)
    tried = [local_path(explicit)] if explicit else []
    if not explicit:
        if request is not None and request.root is not None:
            tried.append(request.root / LAYOUT)
        tried.append(Path(DEBIAN_ROOT))
    for root in tried:
        if split_files(root, split) is not None:
            return root
    what = request.spec if request else "fashion-mnist"
    expected = f"{SPLITS[split]}-images-idx3-ubyte.gz and {SPLITS[split]}-labels-idx1-ubyte.gz"
    raise MissingData(
        f"task {what}: Fashion-MNIST not found (looked for {expected} in {', '.join(map(str, tried))}); "
        f"install the Debian package `{DEBIAN_PACKAGE}` (apt-get install -y {DEBIAN_PACKAGE}, "
        f"files under {DEBIAN_ROOT}/) or give fashion-mnist:PATH"
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x00000803 images, 0x00000801 labels) as a uint8 array."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08" or not 1 <= data[3] <= 4:
        raise HarnessError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise HarnessError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


@functools.lru_cache(maxsize=4)
def load_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28, labels N), read once per process."""
    files = split_files(Path(root), split)
    if files is None:
        raise HarnessError(f"Fashion-MNIST {split} split missing under {root}")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise HarnessError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    if labels.size and labels.max() >= len(CLASSNAMES):
        raise HarnessError(f"{root}: label {labels.max()} outside the 10 classes")
    return images, labels


def upscale(pixels: np.ndarray, size: int = IMAGE_SIZE) -> Image.Image:
    """A 28x28 greyscale array as a size x size RGB image (bicubic)."""
    return Image.fromarray(np.ascontiguousarray(pixels)).resize((size, size), Image.BICUBIC).convert("RGB")


@dataclass(frozen=True)
class FashionMnistTask(Task):
    root: str
    corruption: str | None = None
    severity: int = 0
    split: str = "test"
    name: str = "fashion-mnist"
    version: str = "1"
    classnames: tuple[str, ...] = CLASSNAMES
    templates: TemplateSet = TEMPLATES
    source: str = "disk"
    protocol: str = "apm-bench"
    classes: tuple[int, ...] = ()
    """A subset of the ten classes (the open-set halves): only their images, labelled by their place
    in this tuple; empty for all ten."""

    def samples(self) -> Sequence[SampleRef]:
        _, labels = load_split(self.root, self.split)
        prefix = SPLITS[self.split]
        if not self.classes:
            return [SampleRef(f"{prefix}/{i:05d}", int(label), str(i)) for i, label in enumerate(labels)]
        place = {c: k for k, c in enumerate(self.classes)}
        return [SampleRef(f"{prefix}/{i:05d}", place[int(label)], str(i)) for i, label in enumerate(labels)
                if int(label) in place]

    def load(self, ref: SampleRef) -> LoadedImage:
        images, _ = load_split(self.root, self.split)
        image = upscale(images[int(ref.locator)])
        if self.corruption is not None:
            image = corrupt_sample(image, "fashion-mnist-c", self.corruption, self.severity, ref.sample_id)
        return LoadedImage(image, content_hash(image.tobytes()))


def build_clean(request: TaskRequest) -> Task:
    if request.params:
        raise HarnessError(f"task {request.spec}: fashion-mnist takes no /parameters; did you mean fashion-mnist-c/...?")
    return FashionMnistTask(str(find_root(request)))


def build_corrupted(request: TaskRequest) -> Task:
    corruption, severity = parse_corruption(request)
    name = f"fashion-mnist-c/{corruption}/{severity}"
    return FashionMnistTask(str(find_root(request)), corruption, severity, name=name, source="generated")


def planned_clean(request: TaskRequest) -> PlannedTask:
    return PlannedTask("fashion-mnist", SIZE, CLASSNAMES, TEMPLATES, "apm-bench")


def planned_corrupted(request: TaskRequest) -> PlannedTask:
    corruption, severity = parse_corruption(request)
    return PlannedTask(f"fashion-mnist-c/{corruption}/{severity}", SIZE, CLASSNAMES, TEMPLATES, "apm-bench")


OPEN_SET = {"in": (0, 1, 2, 3, 4), "out": (5, 6, 7, 8, 9)}
"""The open-set halves (tasks.open_set): T-shirts/tops, trousers, pullovers, dresses and coats in;
sandals, shirts, sneakers, bags and ankle boots out."""
OPEN_SIZE = KnownSize(5_000, "Fashion-MNIST t10k, 1,000 test images per class")


def _open_half(request: TaskRequest) -> tuple[str, tuple[int, ...]]:
    half = request.params[0] if len(request.params) == 1 else ""
    if half not in OPEN_SET:
        raise HarnessError(f"task {request.spec}: expected fashion-mnist-open/in or fashion-mnist-open/out")
    return half, OPEN_SET[half]


def build_open(request: TaskRequest) -> Task:
    half, classes = _open_half(request)
    return FashionMnistTask(str(find_root(request)), name=f"fashion-mnist-open/{half}", classes=classes,
                            classnames=tuple(CLASSNAMES[c] for c in classes))


def planned_open(request: TaskRequest) -> PlannedTask:
    half, classes = _open_half(request)
    return PlannedTask(f"fashion-mnist-open/{half}", OPEN_SIZE, tuple(CLASSNAMES[c] for c in classes), TEMPLATES,
                       "apm-bench")


FASHION_MNIST_OPEN = ("fashion-mnist-open/in", "fashion-mnist-open/out@fashion-mnist-open/in")
"""The offline open-set pair: five classes in distribution, the other five out, scored over the five."""
FASHION_MNIST_C = tuple(f"fashion-mnist-c/{c}/{DEFAULT_SEVERITY}" for c in CORRUPTIONS)
"""Table 2's columns on Fashion-MNIST: the 15 corruptions at severity 5, alphabetical."""

TASKS.add(
    "fashion-mnist",
    TaskFamily(
        build_clean,
        f"Fashion-MNIST test set (10,000, 10 classes), 28 px upscaled to 64; Debian `{DEBIAN_PACKAGE}`",
        layouts=(LAYOUT, DEBIAN_ROOT),
        known=planned_clean,
    ),
)
TASKS.add(
    "fashion-mnist-c",
    TaskFamily(
        build_corrupted,
        "Fashion-MNIST test set under an ImageNet-C corruption: fashion-mnist-c/<corruption>/<severity>",
        layouts=(LAYOUT, DEBIAN_ROOT),
        examples=FASHION_MNIST_C,
        known=planned_corrupted,
    ),
)
TASKS.add(
    "fashion-mnist-open",
    TaskFamily(
        build_open,
        "Fashion-MNIST open set: /in = five classes scored over their names, /out = the other five "
        "(use as fashion-mnist-open/out@fashion-mnist-open/in)",
        layouts=(LAYOUT, DEBIAN_ROOT),
        examples=FASHION_MNIST_OPEN,
        known=planned_open,
    ),
)
