"""`--source hub`: CLIP_benchmark's webdataset copies on the Hugging Face hub, read with `datasets`.

The repo is fetched (only the split's shards and the class list) with huggingface_hub, which pins the
revision: the snapshot's commit is the task version, so it enters the fingerprint and every row.
Labels follow CLIP_benchmark's class order; where the task has its own class list (ImageNet), they
are re-mapped by name. Images are decoded in the workers from the stored bytes, never on the driver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.errors import HarnessError, MissingData
from tasks.base import LoadedImage, SampleRef, Task, decode_rgb
from tasks.families import HubCopy
from tasks.request import TaskRequest

IMAGE_COLUMNS = ("webp", "jpg", "jpeg", "png")


@dataclass(frozen=True)
class HubTask(Task):
    name: str
    hub_id: str
    snapshot: str
    """Local folder of the pinned snapshot (the commit is its name)."""
    split: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label_map: tuple[int, ...]
    """Hub class index -> this task's label."""
    version: str
    source: str

    def samples(self) -> Sequence[SampleRef]:
        """Sample id = hub key (unique within a revision); labels read without decoding an image."""
        table = _dataset(self.snapshot, self.split)[0].select_columns(["__key__", "cls"])[:]
        return [
            SampleRef(f"{self.split}/{key}", self.label_map[cls], str(i))
            for i, (key, cls) in enumerate(zip(table["__key__"], table["cls"]))
        ]

    def load(self, ref: SampleRef) -> LoadedImage:
        dataset, column = _dataset(self.snapshot, self.split)
        return decode_rgb(dataset[int(ref.locator)][column]["bytes"], f"{self.hub_id} sample {ref.sample_id}")


@cache
def _dataset(snapshot: str, split: str):  # noqa: ANN202 - a datasets.Dataset, imported lazily
    """One memory-mapped Arrow table per (snapshot, split) and process, image bytes left encoded,
    with the name of its image column."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    files = sorted(str(p) for p in (Path(snapshot) / split).glob("*.tar"))
    if not files:
        raise HarnessError(f"hub snapshot {snapshot} has no {split}/*.tar shards")
    dataset = load_dataset("webdataset", data_files={split: files}, split=split)
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
    return Path(path)


def build_hub_task(request: TaskRequest, hub: HubCopy, split: str = "test") -> HubTask:
    hub_id, templates = hub.hub_id, hub.templates
    classnames = hub.classnames() if hub.classnames else None
    snapshot = fetch_snapshot(hub_id, split, request.data.hub_revision)
    names_file = snapshot / "classnames.txt"
    if not names_file.is_file():
        raise HarnessError(f"hub dataset {hub_id}: no classnames.txt at the repo root")
    hub_names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if classnames is None:
        classnames, label_map = tuple(hub_names), tuple(range(len(hub_names)))
    else:
        label_map = remap_by_name(hub_names, classnames, hub_id)
    commit = snapshot.name
    return HubTask(
        name=request.family,
        hub_id=hub_id,
        snapshot=str(snapshot),
        split=split,
        classnames=classnames,
        templates=templates,
        label_map=label_map,
        version=commit,
        source=f"hub:{hub_id}@{commit}" + ("" if hub.same_test_set else "+not-the-paper-test-set"),
    )


def remap_by_name(hub_names: list[str], ours: Sequence[str], hub_id: str) -> tuple[int, ...]:
    """Hub class i -> our label with the same name. Names that repeat in our list (ImageNet's two
    'missile's and 'sunglasses') are matched in order of appearance, as both lists keep index order."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(ours):
        positions.setdefault(name.lower(), []).append(i)
    mapping = []
    for name in hub_names:
        candidates = positions.get(name.lower())
        if not candidates:
            raise HarnessError(f"hub dataset {hub_id}: class '{name}' is not among the task's class names")
        mapping.append(candidates.pop(0))
    return tuple(mapping)
