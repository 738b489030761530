"""`imagefolder:PATH`: one sub-folder per class, class names from the folder names."""

from __future__ import annotations

from harness.errors import HarnessError, MissingData
from tasks.families import TASKS, TaskFamily
from tasks.folder import FolderTask
from tasks.request import TaskRequest
from tasks.templates import OPENAI_IMAGENET


def build(request: TaskRequest) -> FolderTask:
    if not request.arg:
        raise HarnessError("task imagefolder needs a folder: imagefolder:PATH")
    root = request.path
    if not root.is_dir():
        raise MissingData(f"task {request.spec}: image folder not found: {root} (expected ROOT/<class>/<image>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise HarnessError(f"task {request.spec}: no class sub-folders in {root}")
    return FolderTask(
        name=f"imagefolder:{root.name}",
        root=str(root),
        folder_labels=tuple((c, i) for i, c in enumerate(classes)),
        classnames=tuple(c.replace("_", " ") for c in classes),
        templates=OPENAI_IMAGENET,
        protocol="folder",
        exif_transpose=request.data.exif_transpose,
    )


TASKS.add("imagefolder", TaskFamily(build, "any folder of ROOT/<class>/<image>; class names from folder names", local=True))
