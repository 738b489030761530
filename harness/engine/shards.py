"""Cutting tasks into shards: fixed by (task order, shard size) alone, never by worker count, so a
shard id names the same samples in every run with the same config. A shard id is a file name: the
task's name made file-safe and cut short, then a hash of the whole name, so two tasks whose safe forms
agree (`imagefolder:/d/a b` and `imagefolder:/d/a_b`) never share a file."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from tasks.base import SampleRef, Task
from tasks.sampling import stratified_subset


@dataclass(frozen=True)
class Shard:
    shard_id: str
    task: str
    refs: tuple[SampleRef, ...]


SLUG_CHARS = 60
"""A task's part of a file name: room for the hash and the shard number within a file name's 255 bytes."""


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")


def task_key(name: str) -> str:
    """The file-name prefix of a task's shards and segments: readable, and unique per task name."""
    return f"{slug(name)[-SLUG_CHARS:].strip('_.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def plan_shards(tasks: list[Task], shard_size: int, limit: int | None = None, seed: int = 0) -> list[Shard]:
    shards = []
    for task in tasks:
        refs = stratified_subset(task.samples(), limit, seed, task.name)
        for i, start in enumerate(range(0, len(refs), shard_size)):
            shards.append(Shard(f"{task_key(task.name)}-{i:05d}", task.name, tuple(refs[start : start + shard_size])))
    return shards
