"""A run's work as the driver hands it out: shards of samples for the episodic methods, streams for
the online ones (each continued from its newest checkpoint), and the compaction of finished shards
into segments."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness import resultfiles, rundir
from harness.config import ExecConfig, RunConfig
from harness.engine.shards import Shard, task_key
from harness.engine.stream_parts import Stream, StreamPart, finished_streams, part, resume

log = logging.getLogger("apm_bench")


SEGMENT_SHARDS = 256
"""Finished shards of a task merged into one segment file: 50,000 images in shards of 16 leave 13 files."""


class Compactor:
    """Merges each task's finished shards into segments as they accumulate (the driver writes shards
    one at a time; a segment costs one read of SEGMENT_SHARDS small files), and the rest when the run
    ends. An interrupted run is not compacted: its resume is."""

    def __init__(self, run_dir: Path, shards: list[Shard], fingerprint: str, verified: tuple[Path, ...]) -> None:
        self.run_dir = run_dir
        self.fingerprint = fingerprint
        self.task_of = {s.shard_id: s.task for s in shards}
        self.loose: dict[str, list[str]] = {}
        for path in verified:  # shard files an earlier session finished (verified) but did not merge
            if path.parent.name == rundir.SHARDS and path.stem in self.task_of:
                self.loose.setdefault(self.task_of[path.stem], []).append(path.stem)

    def finished(self, shard: Shard) -> None:
        ids = self.loose.setdefault(shard.task, [])
        ids.append(shard.shard_id)
        if len(ids) >= SEGMENT_SHARDS:
            self._compact(shard.task)

    def flush(self) -> None:
        for task in list(self.loose):
            self._compact(task)

    def _compact(self, task: str) -> None:
        ids = self.loose.pop(task, [])
        if ids:
            resultfiles.compact(self.run_dir, ids, task_key(task), self.fingerprint)


@dataclass(frozen=True)
class Work:
    """A run's work: shards of samples for its episodic methods, streams for its online ones."""

    shards: list[Shard]
    streams: list[Stream]

    @property
    def units(self) -> int:
        return len(self.shards) + len(self.streams)

    @property
    def samples(self) -> int:
        """Distinct samples (every stream of a task holds the task's samples)."""
        seen = {(s.task, r.sample_id) for s in self.shards for r in s.refs}
        seen |= {(task, r.sample_id) for st in self.streams for task, r in st.items}
        return len(seen)

    def done(self, run_dir: Path) -> int:
        """Finished shards and finished streams."""
        ids = resultfiles.done_shards(run_dir)
        return len(ids & {s.shard_id for s in self.shards}) + finished_streams(run_dir, self.streams, ids)

    @property
    def kind(self) -> str:
        """What `units` counts, for messages."""
        return "streams" if not self.shards else "shards" if not self.streams else "shards and streams"


def stream_parts(run_dir: Path, config: RunConfig, execution: ExecConfig, streams: list[Stream], done: frozenset[str],
                  fingerprint: str) -> list[StreamPart]:
    """Each unfinished stream's next part, from its newest checkpoint; row files a checkpoint does not
    follow are set aside first (their samples run again from the checkpoint before them)."""
    parts = []
    for stream in streams:
        where = resume(run_dir, stream, done, fingerprint)
        if where.note:
            log.warning(where.note)
        stale = (resultfiles.shard_path(run_dir, s) for s in where.stale)  # parts are loose until their stream ends
        resultfiles.quarantine(run_dir, tuple((path, "after the stream's checkpoint") for path in stale if path.exists()))
        if where.start < len(stream.items):
            parts.append(part(config, stream, where.start, where.state, execution.checkpoint_seconds))
    return parts
