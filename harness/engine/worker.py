"""One worker: a device, a teacher loaded once, the methods, and a loop over shards. A plain class
(usable in-process by tests and benchmarks); the runner wraps it as a Ray actor."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import torch

from harness.config import RunConfig
from harness.engine.shards import Shard
from harness.errors import HarnessError
from harness.methods import METHODS
from harness.methods.base import Method, Outcome, SampleInput
from harness.models.teacher import load_teacher
from harness.seeding import derive_seed
from harness.store import Row, rows_to_table
from tasks.base import LoadedImage, SampleRef, Task


TOP5_MIN_CLASSES = 5
"""As CLIP_benchmark: top-5 accuracy only where a task has at least 5 classes (below, it is always 100%)."""


@dataclass(frozen=True)
class RunIdentity:
    """What every row of a run repeats, so a row on its own says where it came from."""

    run_id: str
    fingerprint: str
    code_version: str


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise HarnessError(f"--device must be auto, cpu or cuda, not '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device here")
    return torch.device(device)


class ShardWorker:
    def __init__(
        self, config: RunConfig, tasks: dict[str, Task], identity: RunIdentity, device: str = "cpu", threads: int = 1
    ) -> None:
        torch.set_num_threads(threads)
        self.config = config
        self.tasks = tasks
        self.identity = identity
        self.device = resolve_device(device)
        self.teacher = load_teacher(config.teacher, self.device)
        self.methods: list[Method] = [METHODS.get(name)(config) for name in config.methods]
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._prefetched: dict[str, Future] = {}
        self._lock = threading.Lock()

    def info(self) -> dict[str, str]:
        return {"worker": self.name, "device": str(self.device)}

    def text_classifiers(self) -> dict[tuple, torch.Tensor]:
        """Build every text classifier this run's methods score with, once, for all workers."""
        for task in self.tasks.values():
            for method in self.methods:
                templates = method.templates(task)
                if templates is not None:
                    self.teacher.classifier(task.classnames, templates)
        return self.teacher.export_classifiers()

    def adopt_classifiers(self, classifiers: dict[tuple, torch.Tensor]) -> None:
        self.teacher.adopt_classifiers(classifiers)

    def process(self, shard: Shard) -> pa.Table:
        """Rows for every (sample, method) of the shard; a sample that fails to load gets error rows."""
        task = self.tasks[shard.task]
        with self._lock:
            ahead = self._prefetched.pop(shard.shard_id, None)
        loaded, failed = ahead.result() if ahead is not None else self._decode(shard)
        inputs = self._teacher_inputs(task, loaded)
        outcomes: dict[str, list[Outcome]] = {}
        peaks: dict[str, int | None] = {}
        for method in self.methods:
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                outcomes[method.name] = method.evaluate(self.teacher, task, inputs) if inputs else []
            except Exception as exc:  # one method failing on a shard must not hide the others' rows
                outcomes[method.name] = [Outcome(None, error=f"{method.name}: {_one_line(exc)}")] * len(inputs)
            peaks[method.name] = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        hashes = {ref.sample_id: img.content_hash for ref, img in loaded}
        position = {s.ref.sample_id: i for i, s in enumerate(inputs)}
        rows = []
        for ref in shard.refs:
            for method in self.methods:
                if ref.sample_id in failed:
                    outcome = Outcome(None, error=failed[ref.sample_id])
                else:
                    outcome = outcomes[method.name][position[ref.sample_id]]
                row = self._row(task, ref, method.name, outcome, hashes.get(ref.sample_id))
                rows.append(dataclasses.replace(row, peak_memory_bytes=peaks.get(method.name)))
        return rows_to_table(rows)

    def prefetch(self, shard: Shard) -> None:
        """Decode a queued shard's images on the I/O thread while the compute thread works on the
        previous shard (the runner puts this method in the actor's `io` concurrency group)."""
        with self._lock:
            if shard.shard_id not in self._prefetched:
                self._prefetched[shard.shard_id] = self._loader.submit(self._decode, shard)

    def _decode(self, shard: Shard) -> tuple[list[tuple[SampleRef, LoadedImage]], dict[str, str]]:
        task = self.tasks[shard.task]
        loaded: list[tuple[SampleRef, LoadedImage]] = []
        failed: dict[str, str] = {}
        for ref in shard.refs:
            try:
                loaded.append((ref, task.load(ref)))
            except Exception as exc:  # a bad image must cost one row, not the run
                failed[ref.sample_id] = _one_line(exc)
        return loaded, failed

    def _teacher_inputs(self, task: Task, loaded: list[tuple[SampleRef, LoadedImage]]) -> list[SampleInput]:
        if not loaded:
            return []
        start = time.perf_counter()
        pixels = torch.stack([self.teacher.preprocess(img.image) for _, img in loaded])
        embeddings = self.teacher.encode_images(pixels)
        share = (time.perf_counter() - start) / len(loaded)
        return [
            SampleInput(ref, img.image, img.content_hash, self.seed(task, ref), embeddings[i], share)
            for i, (ref, img) in enumerate(loaded)
        ]

    def seed(self, task: Task, ref: SampleRef) -> int:
        return derive_seed(self.config.seed, task.name, ref.sample_id)

    def _row(self, task: Task, ref: SampleRef, method: str, out: Outcome, content_hash: str | None) -> Row:
        teacher = self.config.teacher
        ok = out.error is None and out.prediction is not None
        return Row(
            run_id=self.identity.run_id,
            fingerprint=self.identity.fingerprint,
            code_version=self.identity.code_version,
            task=task.name,
            task_version=task.version,
            data_source=task.source,
            sample_id=ref.sample_id,
            content_hash=content_hash,
            label=ref.label,
            n_classes=len(task.classnames),
            protocol=task.protocol,
            method=method,
            model=teacher.model,
            pretrained=teacher.pretrained,
            weights_source=self.teacher.source.kind,
            weights_sha256=teacher.weights_sha256,
            seed=self.seed(task, ref),
            prediction=out.prediction,
            correct=(out.prediction == ref.label) if ok else None,
            top5=list(out.top5),
            top5_correct=(ref.label in out.top5) if ok and len(task.classnames) >= TOP5_MIN_CLASSES else None,
            confidence=out.confidence,
            prediction_before=out.prediction_before,
            n_templates=out.n_templates,
            template_set=out.template_set,
            ttt_steps=out.steps,
            loss_first=out.losses[0] if out.losses else None,
            loss_last=out.losses[-1] if out.losses else None,
            losses=list(out.losses),
            seconds=out.seconds,
            flops=out.flops,
            peak_memory_bytes=None,
            device=str(self.device),
            worker=self.name,
            error=out.error,
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
