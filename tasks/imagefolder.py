"""`imagefolder:PATH`: one sub-folder per class, class names from the folder names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness.errors import HarnessError
from tasks.base import LoadedImage, SampleRef, Task, open_rgb
from tasks.templates import OPENAI_IMAGENET

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


@dataclass(frozen=True)
class ImageFolderTask(Task):
    root: str
    name: str = "imagefolder"
    version: str = "1"
    templates: tuple[str, ...] = OPENAI_IMAGENET

    def __post_init__(self) -> None:
        if not Path(self.root).is_dir():
            raise HarnessError(f"task {self.name}: image folder not found: {self.root} (expected ROOT/<class>/<image>)")
        if not self.classes:
            raise HarnessError(f"task {self.name}: no class sub-folders in {self.root}")

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(p.name for p in Path(self.root).iterdir() if p.is_dir() and not p.name.startswith(".")))

    @property
    def classnames(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(c.replace("_", " ") for c in self.classes)

    def samples(self) -> Sequence[SampleRef]:
        root = Path(self.root)
        refs = []
        for label, cls in enumerate(self.classes):
            for path in sorted((root / cls).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    rel = path.relative_to(root).as_posix()
                    refs.append(SampleRef(rel, label, str(path)))
        return refs

    def load(self, ref: SampleRef) -> LoadedImage:
        return open_rgb(ref.locator)
