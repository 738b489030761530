"""The fine-grained suite of APM's Table 3 (CoOp's test splits, as TPT evaluates them): flowers102, dtd,
oxford-pets, ucf101, caltech101, food101, sun397, fgvc-aircraft, eurosat, plus stanford-cars.

Every dataset is a fixed list of (image path, label) pairs read from a split file, so one task type
(`SplitTask`) serves them all; what differs between datasets lives in one table (`DATASETS`). Both
on-disk conventions in use are accepted unchanged: TPT's (`<root>/DTD/images`, `<root>/OxfordPets`,
split files in TPT's `data/data_splits`) and CoOp's DATASETS.md (`<root>/dtd/images`,
`<root>/oxford_pets/images`, each split file beside its dataset)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import HarnessError, MissingData
from tasks.base import LoadedImage, SampleRef, Task, open_rgb
from tasks.families import TASKS, HubCopy, TaskFamily
from tasks.planned import KnownSize, PlannedTask, placeholder_names
from tasks.request import TaskRequest, find_folder
from tasks.templates import TemplateSet

Entry = tuple[str, int]
"""(image path relative to the image folder, posix; label)."""

SPLIT = "test"
COOP_DOCS = "github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
TPT_SPLITS = "data/data_splits"
"""Where TPT's repository keeps the split_zhou_*.json files; also looked for under the data root."""


@dataclass(frozen=True)
class SplitTask(Task):
    """Images listed by a split file: order, ids and labels come from the file, never from a folder
    walk, so the test set is exactly the published one (and extra files on disk change nothing)."""

    name: str
    root: str
    """The image folder the split file's paths are relative to."""
    entries: tuple[Entry, ...]
    classnames: tuple[str, ...]
    templates: TemplateSet
    version: str = "1"
    source: str = "disk"
    protocol: str = "coop"
    exif_transpose: bool = False

    def samples(self) -> Sequence[SampleRef]:
        """Sample id = the split file's relative path (stable across machines): the resume key."""
        root = Path(self.root)
        return [SampleRef(path, label, str(root / path)) for path, label in self.entries]

    def load(self, ref: SampleRef) -> LoadedImage:
        return open_rgb(ref.locator, self.exif_transpose)


@dataclass(frozen=True)
class Split:
    """What a dataset's reader finds on disk: the image folder, the test entries, and the class names
    by label (not yet checked), with the file they came from for error messages."""

    image_dir: Path
    entries: tuple[Entry, ...]
    names: dict[int, str]
    source_file: Path


@dataclass(frozen=True)
class Dataset:
    """One row of per-dataset facts (protocols.md, Table 3)."""

    name: str
    title: str
    n_classes: int
    template: str
    """CoOp's per-dataset template (TPT's single "a photo of a {}." is the methods' `single` option)."""
    layouts: tuple[str, ...]
    """Image folders (or, for Aircraft, the folder holding variants.txt) under the data root, TPT's
    name first, CoOp's second."""
    split_file: str
    read: Callable[[Dataset, TaskRequest], Split]
    size: KnownSize
    """The test split's published size: what `apm-bench plan` counts when the data is not here."""

    @property
    def templates(self) -> TemplateSet:
        return TemplateSet(f"coop:{self.name}", (self.template,))

    @property
    def origin(self) -> str:
        return f"{self.title}: images and {self.split_file} as in CoOp's {COOP_DOCS} or TPT's {TPT_SPLITS}"

    def candidates(self) -> tuple[str, ...]:
        """Deeper layouts first, so CoOp's `eurosat/` (images in `eurosat/2750`) or a case-insensitive
        `sun397/` is not mistaken for TPT's flat folder of the same name."""
        return tuple(sorted(self.layouts, key=lambda c: -len(PurePosixPath(c).parts)))

    def subfolders(self) -> tuple[str, ...]:
        """The image sub-folders a `spec:PATH` dataset folder may hold (`images`, `2750`, ...)."""
        subs = (PurePosixPath(*PurePosixPath(c).parts[1:]) for c in self.layouts)
        return tuple(dict.fromkeys(str(s) for s in subs if s.parts))


def image_folder(ds: Dataset, request: TaskRequest, accept: Callable[[Path], bool] = Path.is_dir) -> Path:
    """`spec:PATH` may name the dataset folder (CoOp's `dtd/`) or the image folder itself
    (`dtd/images`, TPT's `OxfordPets/`); otherwise the first layout found under the data root."""
    given = request.path
    if given is not None:
        for sub in ds.subfolders():
            if accept(given / sub):
                return given / sub
    return find_folder(request, ds.candidates(), ds.origin, accept)


def split_file_candidates(request: TaskRequest, image_dir: Path, filename: str) -> list[Path]:
    """--splits-dir first (an explicit choice wins), then beside the dataset (CoOp keeps
    `oxford_pets/split_zhou_OxfordPets.json` next to `oxford_pets/images`), then the data root and
    TPT's `data/data_splits` under it."""
    folders: list[Path] = []
    if request.splits is not None:
        folders.append(request.splits)
    folders += [image_dir, image_dir.parent]
    if request.root is not None:
        folders += [request.root, request.root / "data_splits", request.root / TPT_SPLITS]
    return [f / filename for f in dict.fromkeys(folders)]


def find_split_file(ds: Dataset, request: TaskRequest, image_dir: Path) -> Path:
    tried = split_file_candidates(request, image_dir, ds.split_file)
    for path in tried:
        if path.is_file():
            return path
    raise MissingData(
        f"task {request.spec}: split file {ds.split_file} not found; looked for "
        f"{', '.join(map(str, tried))} (get it from CoOp's {COOP_DOCS} or TPT's {TPT_SPLITS}; or give --splits-dir)"
    )


def read_zhou_split(ds: Dataset, request: TaskRequest) -> Split:
    """CoOp's split_zhou_*.json: {"train"|"val"|"test": [[path, label, class name], ...]}. Names are
    gathered from every split, so a class missing from one split still gets its name."""
    image_dir = image_folder(ds, request)
    path = find_split_file(ds, request, image_dir)
    try:
        splits = json.loads(path.read_text())
        names: dict[int, str] = {}
        for key in ("train", "val", SPLIT):
            for _, label, name in splits.get(key, ()):
                if names.setdefault(int(label), str(name)) != name:
                    raise ValueError(f"label {label} is both '{names[int(label)]}' and '{name}'")
        entries = tuple((PurePosixPath(p).as_posix(), int(label)) for p, label, _ in splits[SPLIT])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise HarnessError(f"task {request.spec}: bad split file {path}: {exc!r}") from None
    return Split(image_dir, entries, names, path)


def read_aircraft(ds: Dataset, request: TaskRequest) -> Split:
    """FGVC-Aircraft's own files: variants.txt (one class a line; line order = label) and
    images_variant_test.txt (`<image id> <variant name>`, the name may contain spaces)."""
    folder = image_folder(ds, request, accept=lambda p: (p / "variants.txt").is_file())
    variants_file, test_file = folder / "variants.txt", folder / ds.split_file
    variants = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    label_of = {name: i for i, name in enumerate(variants)}
    if not test_file.is_file():
        raise MissingData(f"task {request.spec}: {test_file} not found ({ds.origin})")
    entries = []
    for number, line in enumerate(test_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        if variant not in label_of:
            raise HarnessError(
                f"task {request.spec}: {test_file}:{number}: variant '{variant}' is not in {variants_file}"
            )
        entries.append((f"{image_id}.jpg", label_of[variant]))
    return Split(folder / "images", tuple(entries), dict(enumerate(variants)), variants_file)


def checked_classnames(ds: Dataset, request: TaskRequest, split: Split) -> tuple[str, ...]:
    """Labels must be exactly 0..C-1 with C the published class count: a split file for another
    dataset or version fails here, not as silently wrong accuracy."""
    labels = sorted(split.names)
    if labels != list(range(len(labels))):
        raise HarnessError(
            f"task {request.spec}: labels in {split.source_file} are not contiguous 0..{len(labels) - 1}"
        )
    if len(labels) != ds.n_classes:
        raise HarnessError(
            f"task {request.spec}: {split.source_file} has {len(labels)} classes; {ds.title} has {ds.n_classes}"
        )
    if not split.entries:
        raise HarnessError(f"task {request.spec}: no {SPLIT} entries in {split.source_file}")
    stray = next((label for _, label in split.entries if label not in split.names), None)
    if stray is not None:
        raise HarnessError(
            f"task {request.spec}: {split.source_file} has {SPLIT} label {stray} outside 0..{ds.n_classes - 1}"
        )
    return tuple(split.names[i].replace("_", " ") for i in labels)


def build_task(ds: Dataset, request: TaskRequest) -> SplitTask:
    split = ds.read(ds, request)
    classnames = checked_classnames(ds, request, split)
    first = split.image_dir / split.entries[0][0]
    if not first.is_file():  # one stat catches a wrong image folder before any worker starts
        raise HarnessError(
            f"task {request.spec}: first {SPLIT} image {first} (from {split.source_file}) is missing; "
            f"is {split.image_dir} the image folder? ({ds.origin})"
        )
    return SplitTask(
        name=ds.name,
        root=str(split.image_dir),
        entries=split.entries,
        classnames=classnames,
        templates=ds.templates,
        exif_transpose=request.data.exif_transpose,
    )


def coop_size(samples: int, split_file: str) -> KnownSize:
    return KnownSize(samples, f"the test split of CoOp's {split_file} (Zhou et al., IJCV 2022; {COOP_DOCS})")


DATASETS: tuple[Dataset, ...] = (
    Dataset("flowers102", "Oxford Flowers 102", 102, "a photo of a {}, a type of flower.",
            ("Flower102/jpg", "oxford_flowers/jpg"), "split_zhou_OxfordFlowers.json", read_zhou_split,
            coop_size(2_463, "split_zhou_OxfordFlowers.json")),
    Dataset("dtd", "Describable Textures", 47, "{} texture.",
            ("DTD/images", "dtd/images"), "split_zhou_DescribableTextures.json", read_zhou_split,
            coop_size(1_692, "split_zhou_DescribableTextures.json")),
    Dataset("oxford-pets", "Oxford-IIIT Pets", 37, "a photo of a {}, a type of pet.",
            ("OxfordPets", "oxford_pets/images"), "split_zhou_OxfordPets.json", read_zhou_split,
            coop_size(3_669, "split_zhou_OxfordPets.json")),
    Dataset("ucf101", "UCF101 middle frames", 101, "a photo of a person doing {}.",
            ("UCF101", "ucf101/UCF-101-midframes"), "split_zhou_UCF101.json", read_zhou_split,
            coop_size(3_783, "split_zhou_UCF101.json")),
    Dataset("caltech101", "Caltech-101", 100, "a photo of a {}.",
            ("Caltech101", "caltech-101/101_ObjectCategories"), "split_zhou_Caltech101.json", read_zhou_split,
            coop_size(2_465, "split_zhou_Caltech101.json")),
    Dataset("food101", "Food-101", 101, "a photo of {}, a type of food.",
            ("Food101/images", "food-101/images"), "split_zhou_Food101.json", read_zhou_split,
            coop_size(30_300, "split_zhou_Food101.json")),
    Dataset("sun397", "SUN397", 397, "a photo of a {}.",
            ("SUN397", "sun397/SUN397"), "split_zhou_SUN397.json", read_zhou_split,
            coop_size(19_850, "split_zhou_SUN397.json")),
    Dataset("fgvc-aircraft", "FGVC-Aircraft", 100, "a photo of a {}, a type of aircraft.",
            ("fgvc_aircraft", "fgvc-aircraft-2013b/data"), "images_variant_test.txt", read_aircraft,
            KnownSize(3_333, "FGVC-Aircraft 2013b's images_variant_test.txt (Maji et al., 2013), CoOp's test split")),
    Dataset("eurosat", "EuroSAT", 10, "a centered satellite photo of {}.",
            ("eurosat", "eurosat/2750"), "split_zhou_EuroSAT.json", read_zhou_split,
            coop_size(8_100, "split_zhou_EuroSAT.json")),
    Dataset("stanford-cars", "Stanford Cars", 196, "a photo of a {}, a type of car.",
            ("StanfordCars", "stanford_cars"), "split_zhou_StanfordCars.json", read_zhou_split,
            coop_size(8_041, "split_zhou_StanfordCars.json")),
)

FINE_GRAINED: tuple[str, ...] = (
    "flowers102", "dtd", "oxford-pets", "ucf101", "caltech101", "food101", "sun397", "fgvc-aircraft", "eurosat",
)
"""APM's Table 3 columns, in the paper's order (stanford-cars is registered but not among them)."""


HUB_COPIES: dict[str, tuple[str, bool]] = {
    "oxford-pets": ("clip-benchmark/wds_vtab-pets", True),
    "stanford-cars": ("clip-benchmark/wds_cars", True),
    "fgvc-aircraft": ("clip-benchmark/wds_fgvc_aircraft", True),
    "flowers102": ("clip-benchmark/wds_vtab-flowers", False),
    "dtd": ("clip-benchmark/wds_vtab-dtd", False),
    "eurosat": ("clip-benchmark/wds_vtab-eurosat", False),
    "caltech101": ("clip-benchmark/wds_vtab-caltech101", False),
}
"""CLIP_benchmark copies (hub id, same test set as CoOp's split?). Their class names are the hub's own."""
assert set(HUB_COPIES) <= {ds.name for ds in DATASETS}, "a HUB_COPIES key names no dataset"


def planned_task(ds: Dataset) -> PlannedTask:
    """The dataset as `apm-bench plan` prices it without its data (class names live in its split file)."""
    return PlannedTask(ds.name, ds.size, placeholder_names(ds.n_classes), ds.templates, "coop")


def _register(ds: Dataset) -> None:
    def build(request: TaskRequest) -> Task:
        return build_task(ds, request)

    description = f"{ds.title} test split ({ds.n_classes} classes; {ds.split_file}; CoOp/TPT layouts)"
    hub = None
    if ds.name in HUB_COPIES:
        hub_id, same = HUB_COPIES[ds.name]
        hub = HubCopy(hub_id, same_test_set=same)
    TASKS.add(ds.name, TaskFamily(build, description, layouts=ds.candidates(), hub=hub,
                                  known=lambda request: planned_task(ds)))


for _ds in DATASETS:
    _register(_ds)
