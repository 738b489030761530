"""Cutting tasks into shards: fixed by (task order, shard size) alone, never by worker count, so a
shard id names the same samples in every run with the same config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.base import SampleRef, Task
from tasks.sampling import stratified_subset


@dataclass(frozen=True)
class Shard:
    shard_id: str
    task: str
    refs: tuple[SampleRef, ...]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def plan_shards(tasks: list[Task], shard_size: int, limit: int | None = None, seed: int = 0) -> list[Shard]:
    shards = []
    for task in tasks:
        refs = stratified_subset(task.samples(), limit, seed, task.name)
        for i, start in enumerate(range(0, len(refs), shard_size)):
            shards.append(Shard(f"{slug(task.name)}-{i:05d}", task.name, tuple(refs[start : start + shard_size])))
    return shards
