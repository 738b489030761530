"""Streams as work: each stream (a task's samples in one stream order, or a continual run of tasks) is
run part by part, one part at a time, on whichever worker is free. A part starts from the state the
previous one checkpointed and returns its rows with the state after its last sample; the driver writes
the state first and the rows second, so a stream's rows always end where a checkpoint begins. A worker
lost mid-part costs that part only: it is run again from the same checkpoint, and gives the same rows.

On disk: `states/<stream key>-<position>.safetensors` (the online methods' states after `position`
samples; only the newest is kept) and the rows as shards `<stream key>-<start>-<end>`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import interrupts
from harness.config import RunConfig
from harness.engine.shards import task_key
from harness.errors import HarnessError
from harness.rundir import SHARDS, STATES
from harness.streams import order, stream_seed
from tasks.base import SampleRef, Task
from tasks.sampling import stratified_subset

PART_SAMPLES = 4096
"""At most this many samples are handed out with a part (a part ends earlier when its time is up)."""
_POSITION = re.compile(r"-(\d{9})-(\d{9})$")


@dataclass(frozen=True)
class Stream:
    key: str
    """File-name prefix of its rows and states: unique per (stream index, task or continual tasks)."""
    index: int
    seed: int
    items: tuple[tuple[str, SampleRef], ...]
    """(task name, sample) in stream order."""


@dataclass(frozen=True)
class StreamPart:
    """Work for a worker: samples `start` onwards of a stream, from `state` (None: the stream's start)."""

    stream: str
    """The stream's key."""
    protocol: str
    index: int
    seed: int
    start: int
    length: int
    first_task: str
    """The task the methods' states begin on (the first of a continual stream)."""
    items: tuple[tuple[str, SampleRef], ...]
    """(task, sample) from `start`, at most PART_SAMPLES."""
    state: bytes | None
    seconds: float
    """How long the part may run before it checkpoints (the last sample's rows are always whole)."""

    @property
    def shard_id(self) -> str:
        """The part's name while it is in flight (the dispatcher counts its attempts by it)."""
        return f"{self.stream}-{self.start:09d}"

    @property
    def refs(self) -> tuple[tuple[str, SampleRef], ...]:
        return self.items


@dataclass(frozen=True)
class PartResult:
    table: object
    """The rows (a pyarrow table in the store's schema)."""
    state: bytes
    """The methods' states after sample `end` (safetensors)."""
    start: int
    end: int

    @property
    def num_rows(self) -> int:
        return self.table.num_rows  # type: ignore[attr-defined]

    def column(self, name: str):
        return self.table.column(name)  # type: ignore[attr-defined]


def plan_streams(config: RunConfig, tasks: list[Task]) -> list[Stream]:
    """Every stream of the run, in order: per stream index, per task (or one continual stream per index)."""
    refs = {t.name: stratified_subset(t.samples(), config.data.limit, config.sample_seed, t.name) for t in tasks}
    if config.stream == "continual":
        _same_classes(tasks)
        name = "continual:" + "|".join(t.name for t in tasks)
        out = []
        for k in range(config.streams):
            seed = stream_seed(config.seed, config.stream, k)
            items = tuple((t.name, refs[t.name][i]) for t in tasks
                          for i in order([r.label for r in refs[t.name]], "iid", _task_seed(seed, t.name)))
            out.append(Stream(f"stream{k:05d}-{task_key(name)}", k, seed, items))
        return [s for s in out if s.items]
    out = []
    for k in range(config.streams):
        seed = stream_seed(config.seed, config.stream, k)
        for t in tasks:
            picked = order([r.label for r in refs[t.name]], config.stream, _task_seed(seed, t.name))
            out.append(Stream(f"stream{k:05d}-{task_key(t.name)}", k, seed, tuple((t.name, refs[t.name][i]) for i in picked)))
    return [s for s in out if s.items]  # a task without samples has no stream


def _task_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{task}".encode()).digest()[:8], "little")


def _same_classes(tasks: list[Task]) -> None:
    first = tasks[0]
    for task in tasks[1:]:
        if task.classnames != first.classnames:
            raise HarnessError(f"--stream continual carries a state from one task to the next, so every task needs the "
                               f"same classes: {task.name} has other classes than {first.name}")


def part(config: RunConfig, stream: Stream, start: int, state: bytes | None, seconds: float) -> StreamPart:
    return StreamPart(stream.key, config.stream, stream.index, stream.seed, start, len(stream.items),
                      stream.items[0][0], stream.items[start:start + PART_SAMPLES], state, seconds)


def rows_id(stream: str, start: int, end: int) -> str:
    return f"{stream}-{start:09d}-{end:09d}"


def reached(stream: Stream, done: Iterable[str]) -> tuple[int, list[str]]:
    """How far the stream's finished row files reach without a gap from its start, and the ids of
    its row files beyond that (left by a state that was lost: they are set aside and run again)."""
    spans = {}
    for shard in done:
        if shard.startswith(stream.key + "-") and (m := _POSITION.search(shard)):
            spans[int(m.group(1))] = (int(m.group(2)), shard)
    position, used = 0, set()
    while position in spans:
        used.add(spans[position][1])
        position = spans[position][0]
    return position, sorted(s for _, s in spans.values() if s not in used)


def state_path(run_dir: Path, stream: str, position: int) -> Path:
    return run_dir / STATES / f"{stream}-{position:09d}.safetensors"


def write_state(run_dir: Path, stream: str, position: int, data: bytes) -> None:
    """Atomic (a temporary file renamed into place), before the part's rows are written."""
    from harness.state_files import write_bytes_atomic

    with interrupts.deferred():
        write_bytes_atomic(state_path(run_dir, stream, position), data)


def drop_older_states(run_dir: Path, stream: str, position: int) -> None:
    """Once rows up to `position` are on disk, the stream's earlier states are never needed again."""
    for path in (run_dir / STATES).glob(f"{stream}-*.safetensors"):
        if path.name != state_path(run_dir, stream, position).name:
            path.unlink(missing_ok=True)


def finish_stream(run_dir: Path, stream: Stream, fingerprint: str) -> None:
    """A whole stream's row files merged into one segment, and its last state deleted: a finished
    stream is never continued, and a run of 100 streams keeps 100 files, not 100 times its parts."""
    from harness import resultfiles

    ids = sorted(p.stem for p in (run_dir / SHARDS).glob(f"{stream.key}-*.parquet") if _POSITION.search(p.stem))
    if len(ids) > 1:
        resultfiles.compact(run_dir, ids, stream.key, fingerprint)
    for path in (run_dir / STATES).glob(f"{stream.key}-*.safetensors"):
        path.unlink(missing_ok=True)


def read_state(run_dir: Path, stream: str, position: int, fingerprint: str) -> bytes:
    """The checkpoint a resume continues from, verified: its digest over every tensor, the run's
    fingerprint, the stream and the position it claims."""
    from harness.state_files import check_state

    path = state_path(run_dir, stream, position)
    if path.is_symlink() or not path.is_file():
        raise HarnessError(f"{path}: no such state file")
    data = path.read_bytes()
    problem = check_state(data, fingerprint, stream, position)
    if problem:
        raise HarnessError(f"{path}: {problem}")
    return data


@dataclass(frozen=True)
class Resume:
    start: int
    state: bytes | None
    stale: tuple[str, ...]
    """Row files beyond `start` (set aside: run again from the checkpoint)."""
    note: str | None = None


def resume(run_dir: Path, stream: Stream, done: Iterable[str], fingerprint: str) -> Resume:
    """Where a stream continues: after its last row file that a valid checkpoint follows. A checkpoint
    that fails its check sends the stream back to its start, its rows set aside (never mixed with
    rows from another state)."""
    position, beyond = reached(stream, done)
    if position == 0 or position >= len(stream.items):  # not begun, or finished: no state is needed
        return Resume(position, None, tuple(beyond))
    try:
        return Resume(position, read_state(run_dir, stream.key, position, fingerprint), tuple(beyond))
    except HarnessError as exc:
        everything = sorted(s for s in done if s.startswith(stream.key + "-") and _POSITION.search(s))
        return Resume(0, None, tuple(everything), f"{exc}; stream {stream.key} runs again from its start")


def finished_streams(run_dir: Path, streams: list[Stream], done: Iterable[str]) -> int:
    done = set(done)
    return sum(reached(s, done)[0] >= len(s.items) for s in streams)
