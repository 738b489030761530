"""What every task provides: stable sample references (cheap to list on the driver) and a loader
that decodes one image on a worker."""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from tasks.templates import TemplateSet


@dataclass(frozen=True)
class SampleRef:
    """A sample as the driver and the shards see it: no pixels, only how to find them."""

    sample_id: str
    """Stable across runs and machines (relative path, or generator index): the resume key."""
    label: int
    locator: str
    """Task-specific: a file path, a generator index."""


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image
    """RGB, as stored (EXIF orientation applied only when the run asks for it)."""
    content_hash: str
    """Hash of the bytes the image came from, so paired comparisons can check they saw the same data."""


class Task(ABC):
    """A classification task. Implementations are frozen dataclasses so that they pickle to workers."""

    name: str
    version: str
    classnames: tuple[str, ...]
    templates: TemplateSet
    """The task's prompt ensemble ("a photo of a {}." ...), named."""
    protocol: str
    """Where class names and templates come from, as one name (`clip-imagenet`, `coop`,
    `clip-benchmark`, ...): never a mix of two, recorded on every row."""
    source: str
    """Where the pixels come from (disk, drawn, generated, hub:ID@REV): recorded on every row."""
    ood_of: str | None = None
    """Set on an out-of-distribution task (tasks.open_set): the in-distribution task whose classes its
    samples are scored against. Its samples' labels are -1."""

    @abstractmethod
    def samples(self) -> Sequence[SampleRef]:
        """Every sample, in a fixed order."""

    @abstractmethod
    def load(self, ref: SampleRef) -> LoadedImage:
        """Decode one sample; raise with a message naming the file on failure."""


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def decode_rgb(data: bytes, what: str, exif_transpose: bool = False) -> LoadedImage:
    """Encoded image bytes into RGB; errors name `what` and the reason. By default the pixels are
    taken as stored, as TPT, CLIP_benchmark and torchvision's loaders do (`Image.open(f).convert("RGB")`),
    so an image with an EXIF orientation tag is scored as the published numbers scored it;
    `exif_transpose` (--exif-transpose) turns it upright first."""
    try:
        if not data:
            raise ValueError("empty file")
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = (ImageOps.exif_transpose(img) if exif_transpose else img).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image {what}: {exc}") from exc
    return LoadedImage(rgb, content_hash(data))


def open_rgb(path: str | Path, exif_transpose: bool = False) -> LoadedImage:
    """Read an image file into RGB. Errors name the file and the reason in one line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from exc
    return decode_rgb(data, str(path), exif_transpose)
