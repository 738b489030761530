"""Out-of-distribution tasks: samples of one task scored against the classes of another. The spec
`OOD@ID` (or `apm-bench run --ood ID:OOD`) makes one: OOD's images, labels -1, ID's class names,
templates and protocol, and `ood_of` naming ID, so every row says which in-distribution task its
scores are to be told apart from (harness.report.trust pairs them).

Two protocols are built in:
- MCM (Ming et al., NeurIPS 2022), zero-shot OOD detection for CLIP: ImageNet in distribution, and
  the four OOD subsets MOS (Huang & Li, CVPR 2021) curated without ImageNet's concepts: iNaturalist,
  SUN and Places (10,000 images each, one flat `images/` folder) and Textures (DTD's 5,640 images,
  `dtd/images/<class>/`). Their layouts under the data root are MCM's `datasets/` folder's; none has a
  hub copy this project could verify, so they are read from disk only.
- Fashion-MNIST open set, offline: `fashion-mnist-open/in` is the test images of the first five
  classes (T-shirt/top, Trouser, Pullover, Dress, Coat), scored over those five names only, and
  `fashion-mnist-open/out@fashion-mnist-open/in` the other five classes' images (Sandal, Shirt,
  Sneaker, Bag, Ankle boot) against the same five names: 5,000 and 5,000. Shirt is a near-OOD class
  (it looks like the in-distribution tops), the footwear and bags far-OOD."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.registry import unknown_name_message
from tasks.base import LoadedImage, SampleRef, Task
from tasks.families import TASKS, TaskFamily
from tasks.folder import FolderTask
from tasks.planned import KnownSize, PlannedTask
from tasks.request import TaskRequest, find_folder
from tasks.templates import SINGLE, TemplateSet

OOD_LABEL = -1
SEPARATOR = "@"


@dataclass(frozen=True)
class OutOfDistribution(Task):
    """`inner`'s images as out-of-distribution samples of `ood_of` (whose classes and templates it takes)."""

    inner: Task
    classnames: tuple[str, ...]
    templates: TemplateSet
    protocol: str
    version: str
    ood_of: str | None = None  # always given (a default only because Task's attribute has one)
    name: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or f"{self.inner.name}{SEPARATOR}{self.ood_of}")
        object.__setattr__(self, "source", self.source or self.inner.source)

    def samples(self) -> Sequence[SampleRef]:
        return [dataclasses.replace(ref, label=OOD_LABEL) for ref in self.inner.samples()]

    def load(self, ref: SampleRef) -> LoadedImage:
        return self.inner.load(ref)


def split_spec(spec: str) -> tuple[str, str] | None:
    """(OOD spec, ID spec) of `OOD@ID`; None for a spec without the separator."""
    if SEPARATOR not in spec:
        return None
    ood, _, known = spec.rpartition(SEPARATOR)
    if not ood or not known or SEPARATOR in ood:
        raise HarnessError(f"task {spec}: an out-of-distribution task is OOD@ID with one '@', "
                           "e.g. mcm-inaturalist@imagenet")
    return ood, known


def scored_against(inner: Task, known: Task) -> OutOfDistribution:
    """Refused when the OOD data's own classes share a name with the ID task's: those images would be
    counted as unknown although the classifier knows their class."""
    shared = sorted(set(inner.classnames) & set(known.classnames))
    if shared:
        raise HarnessError(f"task {inner.name}{SEPARATOR}{known.name}: {len(shared)} of its classes are also "
                           f"{known.name}'s ({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}); "
                           "out-of-distribution data must hold none of them")
    return OutOfDistribution(inner, known.classnames, known.templates, known.protocol,
                             f"{inner.version}+{known.version}", ood_of=known.name)


def planned_against(inner: PlannedTask, known: Task) -> PlannedTask:
    """The out-of-distribution task as `plan` prices it: inner's size, the in-distribution classes."""
    return dataclasses.replace(inner, name=f"{inner.name}{SEPARATOR}{known.name}", classnames=known.classnames,
                               templates=known.templates)


def _family(spec: str) -> str:
    return spec.partition(":")[0].split("/")[0]


def ood_pair(option: str, known_family: set[str]) -> tuple[str, str]:
    """`--ood ID:OOD` as (ID spec, OOD spec). Both specs may hold ':' (imagefolder:PATH): the split is
    the one ':' after which a registered task family begins. The two must differ."""
    cuts = [i for i, c in enumerate(option) if c == ":" and 0 < i < len(option) - 1]
    pairs = [(option[:i], option[i + 1 :]) for i in cuts]
    found = [p for p in pairs if _family(p[1]) in known_family]
    if len(found) != 1:
        named = [p for p in pairs if _family(p[0]) in known_family]
        if not found and len(named) == 1:  # the ID side is a task; the other is not
            raise HarnessError(f"--ood {option}: " + unknown_name_message("task", _family(named[0][1]), known_family))
        raise HarnessError(f"--ood {option}: expected ID_TASK:OOD_TASK with two task specs, e.g. "
                           "imagenet:mcm-inaturalist or fashion-mnist-open/in:fashion-mnist-open/out")
    if found[0][0] == found[0][1]:
        raise HarnessError(f"--ood {option}: a task cannot be out of its own distribution; name two tasks")
    return found[0]


@dataclass(frozen=True)
class McmSet:
    family: str
    title: str
    layouts: tuple[str, ...]
    """Folders tried under the data root (MCM's `datasets/<name>`); the images are under each one's `folders`."""
    folders: tuple[str, ...]
    """Sub-folders holding the images, each read recursively (`images` of the flat sets; DTD's classes)."""
    size: int


MCM_SETS = (
    McmSet("mcm-inaturalist", "iNaturalist OOD subset (MOS: 110 plant classes absent from ImageNet)",
           ("iNaturalist",), ("images",), 10_000),
    McmSet("mcm-sun", "SUN OOD subset (MOS: 50 scene classes absent from ImageNet)", ("SUN",), ("images",), 10_000),
    McmSet("mcm-places", "Places OOD subset (MOS: 50 scene classes absent from ImageNet)", ("Places",), ("images",),
           10_000),
    McmSet("mcm-textures", "Textures (DTD, all 5,640 images)", ("dtd/images",), (".",), 5_640),
)
MCM_SUITE = ("imagenet", *(f"{s.family}@imagenet" for s in MCM_SETS))
"""MCM's zero-shot OOD protocol: ImageNet's validation set in distribution, the four subsets out."""


def _folder_task(mcm: McmSet) -> Callable[[TaskRequest], FolderTask]:
    def build(request: TaskRequest) -> FolderTask:
        root = find_folder(request, mcm.layouts, mcm.title,
                           accept=lambda p: any((p / f).is_dir() for f in mcm.folders))
        return FolderTask(name=mcm.family, root=str(root), folder_labels=tuple((f, OOD_LABEL) for f in mcm.folders),
                          classnames=(), templates=SINGLE, protocol="mcm", exif_transpose=request.data.exif_transpose)
    return build


def _planned(mcm: McmSet) -> Callable[[TaskRequest], PlannedTask]:
    def known(request: TaskRequest) -> PlannedTask:
        return PlannedTask(mcm.family, KnownSize(mcm.size, f"{mcm.title} (MCM, NeurIPS 2022)"), (), SINGLE, "mcm")
    return known


for _set in MCM_SETS:
    TASKS.add(_set.family, TaskFamily(_folder_task(_set), f"OOD data for MCM's protocol: {_set.title}; "
                                      f"use as {_set.family}@imagenet", layouts=_set.layouts,
                                      examples=(f"{_set.family}@imagenet",), known=_planned(_set), ood_only=True))
