"""A task whose data is not on this machine, as `apm-bench plan` prices it: the published size of its
test set and its class space, so a suite can be priced before anything is fetched. It has no samples
to read: a run never gets one (prepare.check plans from it only for `plan` and `run --dry-run`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError
from tasks.base import LoadedImage, SampleRef, Task
from tasks.templates import TemplateSet


@dataclass(frozen=True)
class KnownSize:
    """A test set's published size, with where the number comes from."""

    samples: int
    source: str


@dataclass(frozen=True)
class PlannedTask(Task):
    name: str
    size: KnownSize
    classnames: tuple[str, ...]
    """The task's class space (FLOPs depend on the class count, not on the names, which may be
    placeholders where they live in the data's own split files)."""
    templates: TemplateSet
    protocol: str
    missing: str = ""
    """Why the data was not used: the lookup's own message, with the paths it tried."""
    version: str = "known-size"
    source: str = "known size"

    def planned_samples(self, limit: int | None) -> int:
        """What a run would take: every sample, or `--limit` of them (stratified, exactly that many)."""
        return self.size.samples if limit is None else min(limit, self.size.samples)

    def samples(self) -> Sequence[SampleRef]:
        raise HarnessError(f"task {self.name}: its data is not here (planned from its known size only)")

    def load(self, ref: SampleRef) -> LoadedImage:
        raise HarnessError(f"task {self.name}: its data is not here (planned from its known size only)")


def placeholder_names(count: int) -> tuple[str, ...]:
    """Class names for a class space known only by its size (the names live in the data's split files)."""
    return tuple(f"class {i}" for i in range(count))
