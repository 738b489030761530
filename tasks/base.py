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
    """RGB, EXIF orientation applied."""
    content_hash: str
    """Hash of the bytes the image came from, so paired comparisons can check they saw the same data."""


class Task(ABC):
    """A classification task. Implementations are frozen dataclasses so that they pickle to workers."""

    name: str
    version: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    """Format strings for the prompt ensemble ("a photo of a {}.")."""
    source: str
    """Where the pixels come from (disk, drawn, generated, hub:ID@REV): recorded on every row."""

    @abstractmethod
    def samples(self) -> Sequence[SampleRef]:
        """Every sample, in a fixed order."""

    @abstractmethod
    def load(self, ref: SampleRef) -> LoadedImage:
        """Decode one sample; raise with a message naming the file on failure."""


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def decode_rgb(data: bytes, what: str) -> LoadedImage:
    """Encoded image bytes into RGB, EXIF orientation applied; errors name `what` and the reason."""
    try:
        if not data:
            raise ValueError("empty file")
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image {what}: {exc}") from exc
    return LoadedImage(rgb, content_hash(data))


def open_rgb(path: str | Path) -> LoadedImage:
    """Read an image file into RGB. Errors name the file and the reason in one line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from exc
    return decode_rgb(data, str(path))
