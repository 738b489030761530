"""How a task spec and the run's data settings reach a task factory, and how factories find their
folders: the user's explicit path, else the first known layout under the data root.

Every path a user gives (`spec:PATH`, --data-root, $APM_BENCH_DATA, --splits-dir) becomes absolute here,
against the driver's working directory: tasks are resolved on the driver and pickled to workers, which
run in another working directory (on another node, Ray's own), where a relative path means nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import DataConfig
from harness.errors import MissingData

DATA_ENV = "APM_BENCH_DATA"


@dataclass(frozen=True)
class TaskRequest:
    """A parsed spec `family[/param...][:arg]`, e.g. `imagenet-c/fog/5`, `imagenet-a:/data/ina`."""

    spec: str
    family: str
    params: tuple[str, ...] = ()
    arg: str | None = None
    """After the first ':': a folder for data tasks (overrides the data root), a count for synthetic."""
    data: DataConfig = field(default_factory=DataConfig)
    data_root: str | None = None
    splits_dir: str | None = None

    @classmethod
    def parse(cls, spec: str, data: DataConfig | None = None, data_root: str | None = None,
              splits_dir: str | None = None) -> TaskRequest:
        name, _, arg = spec.partition(":")
        family, *params = name.split("/")
        return cls(spec, family, tuple(params), arg or None, data or DataConfig(), data_root, splits_dir)

    @property
    def root(self) -> Path | None:
        """--data-root, else $APM_BENCH_DATA; absolute."""
        root = self.data_root or os.environ.get(DATA_ENV)
        return local_path(root) if root else None

    @property
    def path(self) -> Path | None:
        """`spec:PATH` as a folder, absolute (for the families whose argument is a path)."""
        return local_path(self.arg) if self.arg else None

    @property
    def splits(self) -> Path | None:
        """--splits-dir, absolute."""
        return local_path(self.splits_dir) if self.splits_dir else None


def local_path(path: str | os.PathLike[str]) -> Path:
    """A path the user gave, made absolute against this (the driver's) working directory, `~` expanded.
    Not resolved: symlinks stay as given, so a shared mount keeps the name every node knows it by."""
    return Path(path).expanduser().absolute()


def find_folder(
    request: TaskRequest,
    candidates: Sequence[str],
    origin: str,
    accept: Callable[[Path], bool] = Path.is_dir,
) -> Path:
    """The task's folder: `spec:PATH` if given, else the first candidate under the data root that
    `accept`s. The error names every path tried, the task, and where the data comes from."""
    path = request.path
    if path is not None:
        if accept(path):
            return path
        raise MissingData(f"task {request.spec}: {path} is not a {origin} folder (expected {candidates[0]} layout)")
    root = request.root
    if root is None:
        raise MissingData(
            f"task {request.spec}: no data root; give --data-root or set {DATA_ENV} "
            f"(expects {candidates[0]}/ under it: {origin})"
        )
    for candidate in candidates:
        if accept(root / candidate):
            return root / candidate
    tried = ", ".join(str(root / c) for c in candidates)
    raise MissingData(f"task {request.spec}: data not found; looked for {tried} ({origin})")


def has_subfolders(names: Sequence[str] | frozenset[str]) -> Callable[[Path], bool]:
    """Accept a folder holding at least one of the named sub-folders (wnids, class indices)."""
    wanted = frozenset(names)

    def accept(path: Path) -> bool:
        return path.is_dir() and any(p.name in wanted for p in path.iterdir())

    return accept
