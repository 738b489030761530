"""`--source hub`: CLIP_benchmark's webdataset copies on the Hugging Face hub, read with `datasets`.

The repo is fetched (only the split's shards, the class list and the templates) with huggingface_hub,
which pins the revision: the snapshot's commit is the task version, so it enters the fingerprint and
every row. A hub task follows the `clip-benchmark` protocol whole: the copy's labels, its
classnames.txt and its zeroshot_classification_templates.txt, as CLIP_benchmark evaluates it; it never
borrows another protocol's names or prompts. Images are decoded in the workers from the stored bytes,
never on the driver."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.errors import HarnessError, MissingData
from tasks.base import LoadedImage, SampleRef, Task, decode_rgb
from tasks.families import HubCopy
from tasks.request import TaskRequest
from tasks.templates import TemplateSet, from_clip_benchmark

IMAGE_COLUMNS = ("webp", "jpg", "jpeg", "png")
PROTOCOL = "clip-benchmark"
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


@dataclass(frozen=True)
class HubTask(Task):
    name: str
    hub_id: str
    snapshot: str
    """Local folder of the pinned snapshot (the commit is its name)."""
    split: str
    classnames: tuple[str, ...]
    templates: TemplateSet
    version: str
    source: str
    protocol: str = PROTOCOL
    exif_transpose: bool = False

    def samples(self) -> Sequence[SampleRef]:
        """Sample id = hub key (unique within a revision); labels read without decoding an image."""
        table = _dataset(self.snapshot, self.split)[0].select_columns(["__key__", "cls"])[:]
        return [
            SampleRef(f"{self.split}/{key}", int(cls), str(i))
            for i, (key, cls) in enumerate(zip(table["__key__"], table["cls"]))
        ]

    def load(self, ref: SampleRef) -> LoadedImage:
        dataset, column = _dataset(self.snapshot, self.split)
        what = f"{self.hub_id} sample {ref.sample_id}"
        return decode_rgb(dataset[int(ref.locator)][column]["bytes"], what, self.exif_transpose)


@cache
def _dataset(snapshot: str, split: str):  # noqa: ANN202 - a datasets.Dataset, imported lazily
    """One memory-mapped Arrow table per (snapshot, split) and process, image bytes left encoded,
    with the name of its image column."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    files = sorted(str(p) for p in (Path(snapshot) / split).glob("*.tar"))
    if not files:
        raise HarnessError(f"hub snapshot {snapshot} has no {split}/*.tar shards")
    # `datasets` reads data_files as patterns: escaped, a cache folder holding `[ ] * ?` names only its own files
    dataset = load_dataset("webdataset", data_files={split: [glob.escape(f) for f in files]}, split=split)
    for column in IMAGE_COLUMNS:
        if column in dataset.column_names:
            return dataset.cast_column(column, ImageFeature(decode=False)), column
    raise HarnessError(f"hub snapshot {snapshot}: no image column among {IMAGE_COLUMNS}")


def fetch_snapshot(hub_id: str, split: str, revision: str | None) -> Path:
    """The repo's split shards and class list, from the local cache or the hub, at a pinned commit."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            hub_id, repo_type="dataset", revision=revision, allow_patterns=[f"{split}/*.tar", "*.txt"]
        )
    except Exception as exc:  # network, auth, missing revision: one line, naming the repo
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MissingData(f"cannot fetch hub dataset {hub_id} (revision {revision or 'main'}): {first}") from None
    return Path(path).absolute()  # a relative HF_HOME would mean another folder on a worker


def _lines(snapshot: Path, name: str, hub_id: str) -> list[str]:
    path = snapshot / name
    if not path.is_file():
        raise HarnessError(f"hub dataset {hub_id}: no {name} at the repo root")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build_hub_task(request: TaskRequest, hub: HubCopy, split: str = "test") -> HubTask:
    snapshot = fetch_snapshot(hub.hub_id, split, request.data.hub_revision)
    classnames = tuple(_lines(snapshot, CLASSNAMES_FILE, hub.hub_id))
    templates = from_clip_benchmark(f"clip-benchmark:{hub.hub_id.split('/')[-1]}",
                                    _lines(snapshot, TEMPLATES_FILE, hub.hub_id))
    commit = snapshot.name
    return HubTask(
        name=request.family,
        hub_id=hub.hub_id,
        snapshot=str(snapshot),
        split=split,
        classnames=classnames,
        templates=templates,
        version=commit,
        source=f"hub:{hub.hub_id}@{commit}" + ("" if hub.same_test_set else "+not-the-paper-test-set"),
        exif_transpose=request.data.exif_transpose,
    )
