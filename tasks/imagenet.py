"""The natural-shift family (Table 1): ImageNet val, -A, -V2, -R, -Sketch in the folder layouts TPT
users have. CLIP's curated class names (open_clip's IMAGENET_CLASSNAMES, sorted-wnid order), the 1000
sorted wnids and the A/R 200-class subsets are shipped as data; A and R score over their 200 classes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.errors import HarnessError
from harness.openclip_meta import zero_shot_metadata
from tasks.families import TASKS, HubCopy, TaskFamily
from tasks.folder import FolderTask
from tasks.planned import KnownSize, PlannedTask
from tasks.request import TaskRequest, find_folder, has_subfolders
from tasks.templates import OPENAI_IMAGENET

DATA = Path(__file__).parent / "data"
PROTOCOL = "clip-imagenet"
"""CLIP's curated class names and its 80 templates: TPT's and CLIP's protocol for every ImageNet set."""


@cache
def wnid_list(name: str) -> tuple[str, ...]:
    return tuple((DATA / f"{name}.txt").read_text().split())


def imagenet_classnames() -> tuple[str, ...]:
    """CLIP's curated names of the 1000 classes, open_clip's IMAGENET_CLASSNAMES (two names repeat:
    classes are keyed by index, never by name)."""
    return tuple(zero_shot_metadata().IMAGENET_CLASSNAMES)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order: position = class index = IMAGENET_CLASSNAMES index."""
    return wnid_list("imagenet_wnids")


@dataclass(frozen=True)
class Variant:
    name: str
    layouts: tuple[str, ...]
    origin: str
    subset: str | None = None
    """Data file of the variant's wnids when it covers only some classes (A, R: 200)."""
    index_folders: bool = False
    """Folders named 0..999 by class index (V2), never by wnid."""
    hub_id: str | None = None
    version: str = "1"
    size: KnownSize | None = None
    """The published test-set size, what `apm-bench plan` counts when the data is not here."""


VARIANTS = (
    Variant("imagenet", ("imagenet/val", "ImageNet/val", "imagenet/images/val", "ILSVRC2012/val", "val"),
            "ImageNet-1k validation, 50,000 images sorted into <wnid>/ folders", hub_id="clip-benchmark/wds_imagenet1k",
            size=KnownSize(50_000, "ILSVRC2012 validation set (Russakovsky et al., IJCV 2015)")),
    Variant("imagenet-a", ("imagenet-a", "imagenet-adversarial/imagenet-a", "ImageNet-A"),
            "ImageNet-A (Hendrycks et al.), 7,500 images, 200 classes", subset="imagenet_a_wnids",
            hub_id="clip-benchmark/wds_imagenet-a",
            size=KnownSize(7_500, "ImageNet-A (Hendrycks et al., Natural Adversarial Examples, CVPR 2021)")),
    Variant("imagenet-v2", ("imagenetv2-matched-frequency-format-val", "imagenet-v2/imagenetv2-matched-frequency-format-val",
                            "imagenetv2-matched-frequency", "imagenet-v2"),
            "ImageNetV2 matched-frequency, 10,000 images in folders 0..999", index_folders=True,
            hub_id="clip-benchmark/wds_imagenetv2",
            size=KnownSize(10_000, "ImageNetV2 matched-frequency (Recht et al., ICML 2019)")),
    Variant("imagenet-r", ("imagenet-r", "imagenet-rendition/imagenet-r", "ImageNet-R"),
            "ImageNet-R (Hendrycks et al.), 30,000 images, 200 classes", subset="imagenet_r_wnids",
            hub_id="clip-benchmark/wds_imagenet-r",
            size=KnownSize(30_000, "ImageNet-R (Hendrycks et al., The Many Faces of Robustness, ICCV 2021)")),
    Variant("imagenet-sketch", ("ImageNet-Sketch/sketch", "ImageNet-Sketch", "imagenet-sketch/sketch",
                                "imagenet-sketch/images", "imagenet-sketch"),
            "ImageNet-Sketch, 50,889 images in <wnid>/ folders", hub_id="clip-benchmark/wds_imagenet_sketch",
            size=KnownSize(50_889, "ImageNet-Sketch (Wang et al., NeurIPS 2019)")),
)


def class_space(variant: Variant) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wnids, class names) the variant is scored over: all 1000, or its 200-class subset in
    ImageNet index order, so label = position in the subset and the classifier has 200 columns."""
    all_wnids = imagenet_wnids()
    if variant.subset is None:
        return all_wnids, imagenet_classnames()
    index = {w: i for i, w in enumerate(all_wnids)}
    subset = wnid_list(variant.subset)
    names = imagenet_classnames()
    return subset, tuple(names[index[w]] for w in subset)


def folder_labels(variant: Variant) -> tuple[tuple[str, int], ...]:
    wnids, _ = class_space(variant)
    if variant.index_folders:
        return tuple((str(i), i) for i in range(len(wnids)))  # label = int(folder name), not string order
    return tuple((w, i) for i, w in enumerate(wnids))


def build_variant(variant: Variant, request: TaskRequest) -> FolderTask:
    labels = folder_labels(variant)
    folders = [name for name, _ in labels]
    root = find_folder(request, variant.layouts, variant.origin, has_subfolders(folders))
    known = set(folders)
    strays = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in known and not p.name.startswith("."))
    if strays:
        raise HarnessError(
            f"task {request.spec}: {root} has folders that are not {variant.name} classes: {', '.join(strays[:5])}"
        )
    _, classnames = class_space(variant)
    return FolderTask(
        name=variant.name,
        root=str(root),
        folder_labels=labels,
        classnames=classnames,
        templates=OPENAI_IMAGENET,
        protocol=PROTOCOL,
        version=variant.version,
        exif_transpose=request.data.exif_transpose,
    )


def planned_variant(variant: Variant, name: str | None = None) -> PlannedTask:
    """The variant as `apm-bench plan` prices it without its data: its published size, its class space."""
    if variant.size is None:
        raise HarnessError(f"task {variant.name}: no known test-set size")
    return PlannedTask(name or variant.name, variant.size, class_space(variant)[1], OPENAI_IMAGENET, PROTOCOL)


def _register(variant: Variant) -> None:
    hub = HubCopy(variant.hub_id) if variant.hub_id else None
    TASKS.add(
        variant.name,
        TaskFamily(lambda request: build_variant(variant, request), variant.origin, layouts=variant.layouts, hub=hub,
                   known=(lambda request: planned_variant(variant)) if variant.size else None),
    )


for _variant in VARIANTS:
    _register(_variant)

NATURAL_SHIFT = tuple(v.name for v in VARIANTS)
"""Table 1's columns, in the paper's order."""
