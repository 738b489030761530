"""The task-family registry. A family turns a parsed spec into a Task; modules register their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.registry import Registry
from tasks.base import Task
from tasks.planned import PlannedTask
from tasks.request import TaskRequest


@dataclass(frozen=True)
class HubCopy:
    """A Hugging Face dataset holding the task (CLIP_benchmark's webdataset copies). Read under the
    `clip-benchmark` protocol: the copy's own class names, labels and templates."""

    hub_id: str
    same_test_set: bool = True
    """False where the hub copy is not the paper's test set (the report must say so)."""


@dataclass(frozen=True)
class TaskFamily:
    build: Callable[[TaskRequest], Task]
    description: str
    layouts: tuple[str, ...] = ()
    """Folders tried under the data root, in order (what `apm-bench ls` shows)."""
    hub: HubCopy | None = None
    """What `--source hub` reads, where a hub copy exists."""
    examples: tuple[str, ...] = ()
    """Full specs of this family's members, e.g. the 15 ImageNet-C columns."""
    local: bool = False
    """Made here or read from the user's own folder: `--source` does not apply."""
    known: Callable[[TaskRequest], PlannedTask] | None = None
    """The task as `apm-bench plan` prices it when its data is absent (its published test-set size and
    class space); None for a family whose size only its data tells (a user's folder)."""
    ood_only: bool = False
    """Data with no classes of its own: usable only as OOD@ID (tasks.open_set)."""


TASKS: Registry[TaskFamily] = Registry("task", plugins="apm_bench.tasks")
