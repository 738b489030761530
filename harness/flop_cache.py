"""FLOPs per sample as `apm-bench plan` and a run's estimate count them, kept in
$APM_BENCH_HOME/cache/flops.json. Counting builds the teacher on torch's meta device and runs each
method's arithmetic once (importing torch and open_clip, then several seconds per teacher and class
count); the count depends only on what the key holds, so a second plan of the same suite takes a
second instead.

The key: the architecture, the precision, the method and its settings, the task's name and class and
template counts, the versions of torch and open_clip, and the size and time of every source file that
counts (harness/methods, harness/models, harness/flops.py: an edited method counts again)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

from harness.config import RunConfig
from harness.jsoncache import read_json, write_json
from harness.models.sources import home
from tasks.base import Task

PACKAGE = Path(__file__).parent
COUNTING_SOURCES = ("methods/*.py", "models/*.py", "flops.py")
"""The harness files whose code the counts depend on (reports, the CLI and the engine do not count)."""


def cache_file() -> Path:
    return home() / "cache" / "flops.json"


@cache
def _code_stamp() -> str:
    """What the counts were made with: library versions, and the counting sources' sizes and times."""
    versions = []
    for name in ("torch", "open_clip_torch"):
        try:
            versions.append(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions.append("-")
    files = sorted(p for pattern in COUNTING_SOURCES for p in PACKAGE.glob(pattern))
    stats = [(str(p.relative_to(PACKAGE)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([versions, stats]).encode()).hexdigest()[:16]


def key(config: RunConfig, method: str, task: Task) -> str:
    settings = config.settings_of(method)
    parts = [config.teacher.model, config.teacher.precision, method,
             dataclasses.asdict(settings) if settings is not None else None,
             task.name, len(task.classnames), task.templates.name, len(task.templates), _code_stamp()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()


def counts(config: RunConfig, tasks: Iterable[Task],
           count: Callable[[list[Task]], dict[tuple[str, str], int]]) -> tuple[dict[tuple[str, str], int], bool]:
    """(method, task) -> FLOPs per sample for every method of the run and every task, and whether any
    had to be counted now; `count` counts the tasks some of whose methods the cache does not hold."""
    tasks = list(tasks)
    stored = read_json(cache_file())
    keys = {(m, t.name): key(config, m, t) for m in config.methods for t in tasks}
    found = {pair: int(stored[k]) for pair, k in keys.items() if isinstance(stored.get(k), int)}
    todo = [t for t in tasks if any((m, t.name) not in found for m in config.methods)]
    if not todo:
        return found, False
    fresh = count(todo)
    found.update(fresh)
    stored = read_json(cache_file())  # re-read: another process may have added entries meanwhile
    stored.update({keys[pair]: value for pair, value in fresh.items() if pair in keys})
    write_json(cache_file(), stored)
    return found, True
