"""ImageNet-C (Table 2): `imagenet-c/<corruption>/<severity>` from the released
`corruption/severity/wnid/*.JPEG` folders, or, with `--corruptions generated`, made on the fly from
ImageNet val by the same recipe (resize 256, centre crop 224, corrupt, JPEG 85) with
`imagecorruptions`, seeded per sample. Sample ids are the val-relative paths either way, so released
and generated rows pair; rows record which source was used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.registry import unknown_name_message
from tasks.base import LoadedImage, SampleRef, Task, content_hash
from tasks.corruptions import CORRUPTIONS, SEVERITIES, as_released_jpeg, corrupt_sample, imagenet_c_view
from tasks.families import TASKS, TaskFamily
from tasks.folder import FolderTask
from tasks.imagenet import PROTOCOL, VARIANTS, build_variant, class_space, folder_labels
from tasks.request import TaskRequest, find_folder
from tasks.templates import OPENAI_IMAGENET, TemplateSet

LAYOUTS = ("imagenet-c", "ImageNet-C", "imagenet_c")
ORIGIN = "ImageNet-C (Hendrycks & Dietterich), <corruption>/<severity>/<wnid>/*.JPEG"
DEFAULT_SEVERITY = 5
IMAGENET = next(v for v in VARIANTS if v.name == "imagenet")


@dataclass(frozen=True)
class GeneratedCorruptionTask(Task):
    """ImageNet val with one corruption applied in the worker; the data seed depends only on
    (corruption, severity, sample id), never on the run seed, so every run sees the same pixels."""

    val: FolderTask
    corruption: str
    severity: int
    name: str
    classnames: tuple[str, ...]
    templates: TemplateSet
    version: str = "1"
    source: str = "generated"
    protocol: str = PROTOCOL

    def samples(self) -> Sequence[SampleRef]:
        return self.val.samples()

    def load(self, ref: SampleRef) -> LoadedImage:
        view = imagenet_c_view(self.val.load(ref).image)
        image = as_released_jpeg(corrupt_sample(view, "imagenet-c", self.corruption, self.severity, ref.sample_id))
        return LoadedImage(image, content_hash(image.tobytes()))


def parse(request: TaskRequest) -> tuple[str, int]:
    """`<family>/<corruption>[/<severity>]` -> (corruption, severity); severity 5 when omitted."""
    family = request.family
    if not request.params:
        raise HarnessError(
            f"task {family} needs a corruption: {family}/<corruption>[/<severity>], e.g. {family}/fog/5 "
            f"(or --suite {family} for all 15)"
        )
    corruption = request.params[0]
    if corruption not in CORRUPTIONS:
        raise HarnessError(unknown_name_message("ImageNet-C corruption", corruption, CORRUPTIONS))
    severity = request.params[1] if len(request.params) > 1 else str(DEFAULT_SEVERITY)
    if len(request.params) > 2 or not severity.isdigit() or int(severity) not in SEVERITIES:
        raise HarnessError(f"task {request.spec}: expected {family}/<corruption>/<severity 1-5>")
    return corruption, int(severity)


def build(request: TaskRequest) -> Task:
    corruption, severity = parse(request)
    name = f"imagenet-c/{corruption}/{severity}"
    if request.data.corruptions == "generated":
        val = build_variant(IMAGENET, request)  # the spec's :PATH, if any, is the ImageNet val folder here
        return GeneratedCorruptionTask(val, corruption, severity, name, val.classnames, OPENAI_IMAGENET)
    root = find_folder(request, LAYOUTS, ORIGIN, lambda p: (p / corruption / str(severity)).is_dir())
    return FolderTask(
        name=name,
        root=str(root / corruption / str(severity)),
        folder_labels=folder_labels(IMAGENET),
        classnames=class_space(IMAGENET)[1],
        templates=OPENAI_IMAGENET,
        protocol=PROTOCOL,
        source="released",
        exif_transpose=request.data.exif_transpose,
    )


IMAGENET_C = tuple(f"imagenet-c/{c}/{DEFAULT_SEVERITY}" for c in CORRUPTIONS)
"""Table 2's columns, in the paper's (alphabetical) order."""

TASKS.add(
    "imagenet-c",
    TaskFamily(
        build,
        "ImageNet-C: imagenet-c/<corruption>/<severity>; --corruptions generated makes them from ImageNet val",
        layouts=tuple(f"{layout}/<corruption>/<severity>" for layout in LAYOUTS),
        examples=IMAGENET_C,
    ),
)
