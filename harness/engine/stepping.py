"""A worker's side of a stream: the online methods' states loaded from the part's checkpoint (or begun),
the part's samples decoded and embedded by the teacher a batch at a time, each sample stepped through
every online method in stream order, and the states packed again when the part's time is up. The
rows and states depend only on the stream, never on where a part ended, so a part cut by time, by a
lost worker or by a resume leaves the same rows as a stream run whole."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from harness.device import now
from harness.engine.evaluation import attempt
from harness.engine.shards import Shard
from harness.engine.stream_parts import PartResult, StreamPart
from harness.methods.base import Outcome, SampleInput
from harness.methods.online import OnlineMethod, State, StreamSample
from harness.methods.view_feed import ViewFeed, ViewSpec, lookahead
from harness.models.teacher import Teacher
from harness.row import Row
from harness.seeding import derive_seed
from harness.state_files import DIGEST, digest, metadata
from tasks.base import SampleRef, Task


class StreamHost(Protocol):
    """What a part needs of its worker (harness.engine.worker.ShardWorker)."""

    teacher: Teacher
    flop_teacher: Teacher | None
    tasks: dict[str, Task]
    online: list[OnlineMethod]
    shard_size: int
    feature_dir: Path | None
    data_pool: Executor
    data_threads: int

    def feature_index(self, task: Task) -> dict: ...

    def seed(self, task: Task, ref: SampleRef) -> int: ...

    def decode(self, shard: Shard): ...

    def embed(self, task: Task, decoded) -> list: ...

    def row(self, task: Task, ref: SampleRef, method: str, out: Outcome, content_hash: str | None) -> Row: ...


def save_signed(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """safetensors bytes of `tensors` (moved to the CPU) whose metadata, beside `meta`, holds the
    sha256 over their bytes in name order that state_files.check_tensors verifies."""
    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    raw = (flat[name].reshape(-1).view(torch.uint8).numpy().tobytes() if flat[name].numel() else b""
           for name in sorted(flat))
    return save_tensors(flat, {**meta, DIGEST: digest(raw)})


def pack(states: dict[str, State], fingerprint: str, stream: str, position: int) -> bytes:
    """Every method's state as one safetensors file (`method/name` -> tensor, on the CPU)."""
    flat = {f"{method}/{name}": t for method, state in states.items() for name, t in state.items()}
    return save_signed(flat, metadata(fingerprint, stream, position))


def unpack(data: bytes, methods: Sequence[str], device: torch.device) -> dict[str, State]:
    states: dict[str, State] = {m: {} for m in methods}
    for key, tensor in load_tensors(data).items():
        method, _, name = key.partition("/")
        states.setdefault(method, {})[name] = tensor.to(device)
    return states


def advance(worker: StreamHost, part: StreamPart, fingerprint: str) -> PartResult:
    """Run `part` from its checkpoint until its samples or its time run out (at least one batch)."""
    from harness.store import rows_to_table

    methods, teacher, tasks = worker.online, worker.teacher, worker.tasks
    if part.state is None:
        states = {m.name: m.begin(teacher, tasks[part.first_task], part.length) for m in methods}
    else:
        states = unpack(part.state, [m.name for m in methods], teacher.device)
    began, position, rows, flops = time.monotonic(), part.start, [], {}
    for task_name, refs in _batches(part.items, worker.shard_size):
        task = tasks[task_name]
        specs = {m.name: spec for m in methods if (spec := _view_spec(m, teacher, task)) is not None}
        inputs = _inputs(worker, task, Shard(part.shard_id, task_name, refs), pixels=bool(specs))
        views = _ViewFeatures(worker, [i for i in inputs.values() if not isinstance(i, str)], specs)
        for ref in refs:
            seed = derive_seed(part.seed, task.name, ref.sample_id)
            got = inputs[ref.sample_id]
            for method in methods:
                if isinstance(got, str):
                    outcome = Outcome(None, error=got)
                else:
                    feats, seconds = views.of(got, specs.get(method.name))
                    key = (method.name, task.name)
                    if key not in flops:  # per task, not per sample: a method's count depends on the task only
                        counted = attempt(lambda: method.flops(worker.flop_teacher or teacher, task, part.length))
                        flops[key] = counted if isinstance(counted, int) else None
                    outcome = _step(method, worker, task, states[method.name],
                                    StreamSample(ref, position, got.teacher_embedding, seed, feats),
                                    got.teacher_seconds + seconds, flops[key])
                row = worker.row(task, ref, method.name, outcome, None if isinstance(got, str) else got.content_hash)
                rows.append(dataclasses.replace(row, seed=seed, stream=part.protocol, stream_id=part.index,
                                                stream_seed=part.seed, position=position))
            position += 1
        if time.monotonic() - began >= part.seconds:
            break
    return PartResult(rows_to_table(rows), pack(states, fingerprint, part.stream, position), part.start, position)


def _view_spec(method: OnlineMethod, teacher: Teacher, task: Task) -> ViewSpec | None:
    """The views an online method takes of each image (None: the teacher's own embedding only)."""
    spec = getattr(method, "view_spec", None)
    return spec(teacher, task) if spec is not None else None


class _ViewFeatures:
    """Each sample's views, made ahead on the data threads (made from the sample's run-level seed, so
    they are the views every view method of the run sees, in every stream) and encoded once per spec
    for all the online methods that ask for them; each method is charged the encoding's seconds."""

    def __init__(self, worker: StreamHost, inputs: list[SampleInput], specs: dict[str, ViewSpec]) -> None:
        self.worker = worker
        self.index = {s.ref.sample_id: i for i, s in enumerate(inputs)}
        unique = list(dict.fromkeys(specs.values()))
        self.feed = ViewFeed(inputs, unique, worker.data_pool,
                             lookahead(worker.data_threads, sum(s.nbytes for s in unique))) if unique else None
        self.encoded: dict[tuple[str, ViewSpec], tuple[torch.Tensor, float]] = {}

    def of(self, sample: SampleInput, spec: ViewSpec | None) -> tuple[torch.Tensor | None, float]:
        """(views, D) normalised, view 0 the teacher's own, and the seconds they took; (None, 0) without a spec."""
        if spec is None or self.feed is None:
            return None, 0.0
        key = (sample.ref.sample_id, spec)
        if key not in self.encoded:
            teacher = self.worker.teacher
            start = now(teacher.device)
            with torch.no_grad():
                pixels = self.feed.views(self.index[sample.ref.sample_id], spec)
                embedded = torch.cat([sample.teacher_embedding[None].float(), teacher.encode_images(pixels)])
            self.encoded = {k: v for k, v in self.encoded.items() if k[0] == sample.ref.sample_id}  # one sample held
            self.encoded[key] = (F.normalize(embedded, dim=-1), now(teacher.device) - start)
        return self.encoded[key]


def _inputs(worker: StreamHost, task: Task, batch: Shard, pixels: bool) -> dict[str, SampleInput | str]:
    """Each sample of a stream batch, or why it could not be read: the embedding from the feature
    cache's canonical batches when the run has one (decoded too where a method takes views), else
    decoded and embedded here. Their seeds are the run's per-sample seeds (the views' source)."""
    if worker.feature_dir is None:
        decoded = worker.decode(batch)
        out: dict[str, SampleInput | str] = dict(decoded.failed)
        out.update({s.ref.sample_id: s for s in worker.embed(task, decoded)})
        return out
    index = worker.feature_index(task)
    images = {ref.sample_id: img.image for ref, img in worker.decode(batch).loaded} if pixels else {}
    out = {}
    for ref in batch.refs:
        got = index[ref.sample_id]
        out[ref.sample_id] = got if isinstance(got, str) else SampleInput(
            ref, images.get(ref.sample_id), got[1], worker.seed(task, ref), got[0], 0.0)  # type: ignore[arg-type]
    return out


def _step(method: OnlineMethod, worker: StreamHost, task: Task, state: State, sample: StreamSample,
          teacher_seconds: float, flops: int | None) -> Outcome:
    """One sample through one method, timed on the device; a failure is that row's error (the state
    keeps whatever the step did before failing: a resume repeats the same step and the same failure)."""
    teacher = worker.teacher
    start = now(teacher.device)
    got = attempt(lambda: method.step(teacher, task, state, sample))
    seconds = now(teacher.device) - start
    if isinstance(got, str):
        return Outcome(None, error=got)
    return dataclasses.replace(got, seconds=teacher_seconds + seconds, flops=flops)


def _batches(items: Sequence[tuple[str, SampleRef]], size: int) -> Iterator[tuple[str, tuple[SampleRef, ...]]]:
    """Consecutive samples of one task, at most `size` at a time (a continual stream's batches never
    straddle two tasks)."""
    batch: list[SampleRef] = []
    current = ""
    for task_name, ref in items:
        if batch and (task_name != current or len(batch) == size):
            yield current, tuple(batch)
            batch = []
        current = task_name
        batch.append(ref)
    if batch:
        yield current, tuple(batch)

