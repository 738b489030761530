"""The one folder reader every on-disk layout uses: images under ROOT/<class folder>/..., with an
explicit folder -> label map (wnids, class indices as names, class names)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.base import LoadedImage, SampleRef, Task, open_rgb
from tasks.templates import TemplateSet

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


@dataclass(frozen=True)
class FolderTask(Task):
    name: str
    root: str
    folder_labels: tuple[tuple[str, int], ...]
    """(folder name, label). Never inferred from sorting strings: V2's folders 0..999 are labels."""
    classnames: tuple[str, ...]
    templates: TemplateSet
    protocol: str
    version: str = "1"
    source: str = "disk"
    exif_transpose: bool = False

    def samples(self) -> Sequence[SampleRef]:
        """Sample id = path relative to the root (stable across machines); files in sorted order."""
        root = Path(self.root)
        refs = []
        for folder, label in self.folder_labels:
            base = root / folder
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    refs.append(SampleRef(path.relative_to(root).as_posix(), label, str(path)))
        return refs

    def load(self, ref: SampleRef) -> LoadedImage:
        return open_rgb(ref.locator, self.exif_transpose)
