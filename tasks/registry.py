"""Tasks and suites by name. A task spec is `NAME` or `NAME:ARG` (e.g. `imagefolder:/data/pets`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.registry import Registry
from tasks.base import Task
from tasks.imagefolder import ImageFolderTask
from tasks.synthetic import SyntheticTask

TaskFactory = Callable[[str | None], Task]
TASKS: Registry[TaskFactory] = Registry("task")


def _synthetic(arg: str | None) -> Task:
    if arg is None:
        return SyntheticTask()
    if not arg.isdigit() or int(arg) < 1:
        raise HarnessError(f"task synthetic:{arg}: the argument is the number of images per class (a positive integer)")
    return SyntheticTask(per_class=int(arg), name=f"synthetic:{arg}")


def _imagefolder(arg: str | None) -> Task:
    if not arg:
        raise HarnessError("task imagefolder needs a folder: imagefolder:PATH")
    return ImageFolderTask(root=arg, name=f"imagefolder:{Path(arg).name}")


TASKS.add("synthetic", _synthetic)
TASKS.add("imagefolder", _imagefolder)


def resolve_task(spec: str) -> Task:
    name, _, arg = spec.partition(":")
    return TASKS.get(name)(arg or None)


@dataclass(frozen=True)
class Suite:
    """A named bundle of tasks, methods and a teacher, with settings that make it the right size."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    model: str
    pretrained: str
    description: str
    apm: dict[str, object] = field(default_factory=dict)
    """ApmConfig overrides the suite applies before any flag does."""


SUITES: Registry[Suite] = Registry("suite")
SUITES.add(
    "smoke",
    Suite(
        tasks=("synthetic",),
        methods=("zeroshot", "ensemble", "apm"),
        model="apm-tiny",
        pretrained="none",
        description="48 drawn shapes, zero-shot / ensemble / APM on the random tiny teacher (~1 min on 2 CPUs)",
        # a small APM: the paper-size network costs ~30 s per sample on 2 CPU cores
        apm={"image_size": 64, "patch_size": 8, "hidden": (256, 256, 128), "steps": 20, "lr": 1e-3},
    ),
)
