"""ImageNet-C (Table 2): `imagenet-c/<corruption>/<severity>` from the released
`corruption/severity/wnid/*.JPEG` folders, or, with `--corruptions generated`, made on the fly from
ImageNet val by the same recipe (resize 256, centre crop 224, corrupt, JPEG 85) with
`imagecorruptions`, seeded per sample. Sample ids are the val-relative paths either way, so released
and generated rows pair; rows record which source was used.

`apm-bench imagenet-c build` writes the generated images once, in the released layout, with a
GENERATED.json marker at the root: such a folder is read like the released one but its rows say
`generated`, since its files are byte for byte the JPEGs `--corruptions generated` decodes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

from harness.errors import HarnessError, MissingData
from harness.registry import unknown_name_message
from tasks.base import LoadedImage, SampleRef, Task, decode_rgb
from tasks.corruptions import (
    CORRUPTIONS,
    RELEASED_JPEG_QUALITY,
    SEVERITIES,
    corrupt_sample,
    imagenet_c_view,
    released_jpeg_bytes,
)
from tasks.families import TASKS, TaskFamily
from tasks.folder import FolderTask
from tasks.imagenet import PROTOCOL, VARIANTS, build_variant, class_space, folder_labels, planned_variant
from tasks.planned import KnownSize, PlannedTask
from tasks.request import TaskRequest, find_folder
from tasks.templates import OPENAI_IMAGENET, TemplateSet

LAYOUTS = ("imagenet-c", "ImageNet-C", "imagenet_c")
ORIGIN = "ImageNet-C (Hendrycks & Dietterich), <corruption>/<severity>/<wnid>/*.JPEG"
DEFAULT_SEVERITY = 5
IMAGENET = next(v for v in VARIANTS if v.name == "imagenet")
SIZE = KnownSize(50_000, "ImageNet-C (Hendrycks & Dietterich, ICLR 2019): the 50,000 ImageNet val images "
                         "under each corruption and severity")
"""Every (corruption, severity) task's size, released or generated alike."""
MARKER = "GENERATED.json"
"""At the root of a folder written by `apm-bench imagenet-c build`: the recipe and what was built."""


def generated_jpeg(val_image: Image.Image, corruption: str, severity: int, sample_id: str) -> bytes:
    """The one recipe, as the JPEG file: resize 256, centre crop 224, corrupt with the sample's data
    seed, JPEG 85. The generated task decodes these bytes and the build writes them, so both agree."""
    view = imagenet_c_view(val_image)
    return released_jpeg_bytes(corrupt_sample(view, "imagenet-c", corruption, severity, sample_id))


def read_marker(root: Path) -> dict[str, Any] | None:
    """The build's marker at `root`, or None for a folder the build did not write (the released set)."""
    path = root / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """A temporary name beside the target (a `.tmp` suffix, which no folder reader lists), then rename:
    a file is whole or absent, so an interrupted build resumes file by file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask-respecting, as store.py's files
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # also when Ray cancels the task mid-write
            tmp.unlink()


def update_marker(out: Path, val: str, pairs: list[tuple[str, int]], limit: int | None, failed: dict[str, str] | None) -> None:
    """GENERATED.json, the folder's provenance: the recipe, the imagecorruptions version, the val folder,
    `corruptions` (name -> severities built), `unfinished` (pairs started, not finished), `limited` (pairs
    built only for a --limit subset) and `failed` (output -> reason). Called before a build (`failed`
    None: its new pairs become unfinished, and the marker claims the folder, so a resume is ours) and
    after it. Unchanged content is not rewritten, so a build with nothing to do changes no file."""
    old = read_marker(out) or {}
    built = {c: set(s) for c, s in old.get("corruptions", {}).items()}
    unfinished, limited = set(old.get("unfinished", ())), dict(old.get("limited", {}))
    failures = {k: v for k, v in old.get("failed", {}).items() if not (out / k).exists()} | (failed or {})
    for c, s in pairs:
        key, was_full = f"{c}/{s}", s in built.get(c, ()) and f"{c}/{s}" not in limited
        if failed is None:
            if s not in built.get(c, ()):
                unfinished.add(key)
            continue
        built.setdefault(c, set()).add(s)
        unfinished.discard(key)
        if limit is None:
            limited.pop(key, None)
        elif not was_full:
            limited[key] = limit
    version = metadata.version("imagecorruptions")
    marker = {
        "recipe": f"resize 256, centre crop 224, imagecorruptions {version} with the project's compatibility "
                  f"fixes, per-sample seed, JPEG {RELEASED_JPEG_QUALITY}",
        "imagecorruptions": version, "jpeg_quality": RELEASED_JPEG_QUALITY, "val": val,
        "corruptions": {c: sorted(built[c]) for c in CORRUPTIONS if c in built},
        "unfinished": sorted(unfinished), "limited": limited, "failed": dict(sorted(failures.items())),
    }
    if {k: v for k, v in old.items() if k != "updated"} != marker:
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_atomic(out / MARKER, (json.dumps(marker | {"updated": stamp}, indent=2) + "\n").encode())


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
        """Decoded from the JPEG bytes, hashed as bytes: the same pixels and content hash as the
        file the build writes for this sample."""
        data = generated_jpeg(self.val.load(ref).image, self.corruption, self.severity, ref.sample_id)
        return decode_rgb(data, f"{self.name} of {ref.locator}")


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
    marker = read_marker(root)
    if marker is not None and severity not in marker.get("corruptions", {}).get(corruption, ()):
        raise MissingData(
            f"task {request.spec}: {root / corruption / str(severity)} is an unfinished build ({root / MARKER} "
            f"does not list it); finish it with: apm-bench imagenet-c build --out {root} "
            f"--corruption {corruption} --severity {severity} --val {marker.get('val', 'VAL')}"
        )
    return FolderTask(
        name=name,
        root=str(root / corruption / str(severity)),
        folder_labels=folder_labels(IMAGENET),
        classnames=class_space(IMAGENET)[1],
        templates=OPENAI_IMAGENET,
        protocol=PROTOCOL,
        source="released" if marker is None else "generated",
        exif_transpose=request.data.exif_transpose,
    )


def planned(request: TaskRequest) -> PlannedTask:
    """A corruption's task as `apm-bench plan` prices it without the data: ImageNet val's class space."""
    corruption, severity = parse(request)
    return dataclasses.replace(planned_variant(IMAGENET, f"imagenet-c/{corruption}/{severity}"), size=SIZE)


IMAGENET_C = tuple(f"imagenet-c/{c}/{DEFAULT_SEVERITY}" for c in CORRUPTIONS)
"""Table 2's columns, in the paper's (alphabetical) order."""

TASKS.add(
    "imagenet-c",
    TaskFamily(
        build,
        "ImageNet-C: imagenet-c/<corruption>/<severity>; --corruptions generated makes them from ImageNet val",
        layouts=tuple(f"{layout}/<corruption>/<severity>" for layout in LAYOUTS),
        examples=IMAGENET_C,
        known=planned,
    ),
)
