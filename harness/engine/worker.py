"""One worker: a device, a teacher loaded once, the methods, and a loop over shards. A plain class
(usable in-process by tests and benchmarks); the runner wraps it as a Ray actor."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.config import RunConfig
from harness.engine.shards import Shard, plan_shards
from harness.device import PeakMemory, effective_precision, is_device_error, is_out_of_memory, now, resolve_device, set_tf32
from harness.engine.evaluation import MethodRun, evaluate_shard, one_line
from harness.engine.features import Features, feature_key, feature_path, read_features, write_features
from harness.engine.stepping import advance
from harness.engine.stream_parts import PartResult, StreamPart
from harness.methods import METHODS
from harness.methods.base import Method, Outcome, SampleInput
from harness.methods.online import OnlineMethod
from harness.models.pgd import attack_image
from harness.models.teacher import Teacher, load_teacher, meta_teacher
from harness.seeding import derive_seed
from harness.errors import HarnessError
from harness.environment import device_environment, environment_id, make_deterministic
from harness.row import Row
from tasks.base import LoadedImage, SampleRef, Task
from tasks.templates import SINGLE

if TYPE_CHECKING:
    import pyarrow as pa

TOP5_MIN_CLASSES = 5
"""As CLIP_benchmark: top-5 accuracy only where a task has at least 5 classes (below, it is always 100%)."""


@dataclass(frozen=True)
class Decoded:
    """A shard's images as the compute thread takes them."""

    loaded: list[tuple[SampleRef, LoadedImage]]
    failed: dict[str, str]
    """sample id -> why its image could not be read."""
    pixels: torch.Tensor | None = None
    """The teacher's input (len(loaded), 3, S, S), preprocessed and page-locked off the compute thread
    (CUDA workers, so the copy to the device does not block); None: made when the shard is computed."""


@dataclass(frozen=True)
class RunIdentity:
    """What every row of a run repeats, so a row on its own says where it came from."""

    run_id: str
    fingerprint: str
    code_version: str


class ShardWorker:
    def __init__(
        self, config: RunConfig, tasks: dict[str, Task], identity: RunIdentity, device: str = "cpu", threads: int = 1,
        data_threads: int = 1, feature_dir: str | None = None,
    ) -> None:
        """`threads`: torch's intra-op threads (fixed, so results do not depend on the worker count);
        `data_threads`: threads that decode images and make views (a GPU worker gets its share of the
        node's CPUs for these, so the GPU is not left waiting); `feature_dir`: the feature cache
        (harness.engine.features), when the run uses one."""
        torch.set_num_threads(threads)
        if config.deterministic:
            make_deterministic()  # before the first CUDA work: cuBLAS reads its setting then
        self.config = config
        self.tasks = tasks
        self.identity = identity
        self.device = resolve_device(device)
        set_tf32(self.device, config.teacher.precision)
        self.environment = device_environment(self.device)
        self.environment_id = environment_id(self.environment)
        self.precision = effective_precision(self.device.type, config.teacher.precision)
        self.teacher = load_teacher(config.teacher, self.device)
        self.flop_teacher = _flop_teacher(self.teacher)
        self.methods: list[Method] = [METHODS.get(name)(config.settings_of(name)) for name in config.episodic]
        self.online: list[OnlineMethod] = [METHODS.get(name)(config.settings_of(name)) for name in config.online]
        self.shard_size = config.shard_size
        self.attack_label = config.attack.label if config.attack is not None else None
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.data_threads = max(1, data_threads)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._decoders = ThreadPoolExecutor(max_workers=self.data_threads, thread_name_prefix="decode")
        self.data_pool = self._decoders
        for method in [*self.methods, *self.online]:  # methods with a data side of their own (views, transforms) share the threads
            if hasattr(method, "data_pool"):
                method.data_pool = self._decoders
            if hasattr(method, "flop_teacher"):
                method.flop_teacher = self.flop_teacher
        self._prefetched: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.feature_dir = Path(feature_dir) if config.feature_cache and feature_dir else None
        if config.feature_cache and self.feature_dir is None:
            raise HarnessError("this run reads the teacher's features from a cache: give --feature-cache DIR")
        self._index: tuple[str, dict[str, tuple[torch.Tensor, str] | str]] | None = None
        self._pixels_needed = not all(getattr(m, "features_only", False) for m in self.methods)

    def info(self) -> dict:
        """Who and where this worker is: its name, device, and the device and software its rows are
        computed with (the driver records them in the manifest, keyed as the rows' `environment`)."""
        return {"worker": self.name, "device": str(self.device), "environment": self.environment,
                "environment_id": self.environment_id}

    def text_classifiers(self) -> dict[tuple, torch.Tensor]:
        """Build every text classifier this run's methods score with, once, for all workers."""
        for task in self.tasks.values():
            for method in [*self.methods, *self.online]:
                templates = method.templates(task)
                if templates is not None:
                    self.teacher.classifier(task.classnames, templates)
        return self.teacher.export_classifiers()

    def adopt_classifiers(self, classifiers: dict[tuple, torch.Tensor]) -> None:
        self.teacher.adopt_classifiers(classifiers)

    def process(self, work: Shard | StreamPart) -> pa.Table | PartResult:
        """A shard's rows as a table in the store's schema (what the driver writes); a stream part's rows
        with the online methods' states after it (harness.engine.stepping)."""
        if isinstance(work, StreamPart):
            try:
                return advance(self, work, self.identity.fingerprint)
            except RuntimeError as exc:
                if is_device_error(exc) and not is_out_of_memory(exc):
                    _restart(exc)  # as for a shard: the device is unusable, Ray restarts the actor
                raise  # the part is run again from the same checkpoint
        from harness.store import rows_to_table  # pyarrow: a worker used in-process (gpu_check) can do without

        return rows_to_table(self.rows(shard=work))

    def rows(self, shard: Shard) -> list[Row]:
        """Rows for every (sample, method) of the shard. A sample that fails to load gets error rows; a
        method that fails gets error rows for the samples it failed on (evaluation.py), and the other
        methods' rows stand. A sticky device error ends the worker (Ray restarts it); any other failure
        outside the methods (the teacher's forward) fails the shard, which is retried."""
        task = self.tasks[shard.task]
        with self._lock:
            ahead = self._prefetched.pop(shard.shard_id, None)
        cached = read_features(self.feature_dir, self.config, task, shard, self.device) if self.feature_dir else None
        decoded = ahead.result() if ahead is not None else (
            self.decode(shard) if cached is None or self._pixels_needed else Decoded([], cached.failed))
        memory = PeakMemory(self.device)
        try:
            inputs = self.embed(task, decoded) if cached is None else self._cached_inputs(task, shard, cached, decoded)
            if cached is None and self.feature_dir is not None:
                write_features(self.feature_dir, self.config, task, shard, _features(inputs, decoded))
            runs = evaluate_shard(self.methods, self.teacher, task, inputs, memory, self._decoders,
                                  self.data_threads) if inputs else {m.name: MethodRun() for m in self.methods}
        except RuntimeError as exc:
            if is_device_error(exc) and not is_out_of_memory(exc):
                _restart(exc)  # a sticky CUDA error: this process's device is unusable; Ray restarts the actor
            raise  # out of memory in the teacher's forward, or a bug outside the methods: the shard is retried
        hashes = {s.ref.sample_id: s.content_hash for s in inputs}
        position = {s.ref.sample_id: i for i, s in enumerate(inputs)}
        rows = []
        for ref in shard.refs:
            for method in self.methods:
                run = runs[method.name]
                if ref.sample_id in decoded.failed:
                    outcome = Outcome(None, error=decoded.failed[ref.sample_id])
                else:
                    outcome = run.outcomes[position[ref.sample_id]]
                row = self.row(task, ref, method.name, outcome, hashes.get(ref.sample_id))
                rows.append(dataclasses.replace(row, peak_memory_bytes=run.peak,
                                                peak_memory_samples=outcome.batch if run.peak else None))
        return rows

    def prefetch(self, shard: Shard | StreamPart) -> None:
        """Decode a queued shard's images on the I/O thread while the compute thread works on the
        previous shard (the runner puts this method in the actor's `io` concurrency group). A stream
        part decodes as it goes: how far it gets depends on its time."""
        if isinstance(shard, StreamPart):
            return
        if self.feature_dir is not None and not self._pixels_needed and \
                feature_path(self.feature_dir, self.tasks[shard.task],
                             feature_key(self.config, self.tasks[shard.task], shard.shard_id)).exists():
            return  # its features are cached and no method needs the pixels
        with self._lock:
            if shard.shard_id not in self._prefetched:
                self._prefetched[shard.shard_id] = self._loader.submit(self.decode, shard)

    def decode(self, shard: Shard) -> Decoded:
        """Every image of the shard, decoded on the data threads (PIL releases the GIL while decoding);
        on CUDA also the teacher's input, page-locked, so that a prefetched shard's copy to the device
        neither waits for the CPU nor blocks."""
        task = self.tasks[shard.task]

        def load(ref: SampleRef) -> LoadedImage | str:
            try:
                return task.load(ref)
            except Exception as exc:  # a bad image must cost one row, not the run
                return one_line(exc)

        loaded: list[tuple[SampleRef, LoadedImage]] = []
        failed: dict[str, str] = {}
        for ref, result in zip(shard.refs, self._decoders.map(load, shard.refs)):
            if isinstance(result, str):
                failed[ref.sample_id] = result
            else:
                loaded.append((ref, result))
        loaded = self._attacked(task, loaded)
        pixels = self._pixels(loaded).pin_memory() if loaded and self.device.type == "cuda" else None
        return Decoded(loaded, failed, pixels)

    def _attacked(self, task: Task, loaded: list[tuple[SampleRef, LoadedImage]]) -> list[tuple[SampleRef, LoadedImage]]:
        """With --attack, each image as the attack left it (harness.models.pgd), against the zero-shot
        classifier of "a photo of a {}.": what the teacher, every method and the rows' hashes of the
        source then see (the hash stays the source's; the row's `attack` says what was done to it)."""
        attack = self.config.attack
        if attack is None or not loaded:
            return loaded
        classifier = self.teacher.classifier(task.classnames, SINGLE)
        return [(ref, LoadedImage(attack_image(self.teacher, classifier, img.image,
                                               derive_seed(self.config.seed, task.name, ref.sample_id, "attack"),
                                               attack, ref.label), img.content_hash))
                for ref, img in loaded]

    def _pixels(self, loaded: list[tuple[SampleRef, LoadedImage]]) -> torch.Tensor:
        return torch.stack(list(self._decoders.map(self.teacher.preprocess, [img.image for _, img in loaded])))

    def embed(self, task: Task, decoded: Decoded) -> list[SampleInput]:
        loaded = decoded.loaded
        if not loaded:
            return []
        start = now(self.device)
        pixels = decoded.pixels if decoded.pixels is not None else self._pixels(loaded)
        embeddings = self.teacher.encode_images(pixels)
        share = (now(self.device) - start) / len(loaded)
        return [
            SampleInput(ref, img.image, img.content_hash, self.seed(task, ref), embeddings[i], share)
            for i, (ref, img) in enumerate(loaded)
        ]

    def _cached_inputs(self, task: Task, shard: Shard, cached: Features, decoded: Decoded) -> list[SampleInput]:
        """Inputs whose embeddings come from the cache (no teacher forward, so no teacher seconds), with
        the decoded images where a method needs the pixels."""
        images = {ref.sample_id: img.image for ref, img in decoded.loaded}
        refs = {ref.sample_id: ref for ref in shard.refs}
        return [SampleInput(refs[i], images.get(i), h, self.seed(task, refs[i]), cached.embeddings[k], 0.0)  # type: ignore[arg-type]
                for k, (i, h) in enumerate(zip(cached.ids, cached.hashes))]

    def feature_index(self, task: Task) -> dict[str, tuple[torch.Tensor, str] | str]:
        """Every sample of `task` -> (embedding, content hash), or why it could not be read: from the
        cache, each canonical shard missing from it made (and written) here. Kept for one task at a time."""
        if self._index is not None and self._index[0] == task.name:
            return self._index[1]
        index: dict[str, tuple[torch.Tensor, str] | str] = {}
        for shard in plan_shards([task], self.config.shard_size, self.config.data.limit, self.config.sample_seed):
            cached = read_features(self.feature_dir, self.config, task, shard, self.device)  # type: ignore[arg-type]
            if cached is None:
                decoded = self.decode(shard)
                cached = _features(self.embed(task, decoded), decoded)
                write_features(self.feature_dir, self.config, task, shard, cached)  # type: ignore[arg-type]
            index.update(cached.failed)
            index.update({i: (cached.embeddings[k], h) for k, (i, h) in enumerate(zip(cached.ids, cached.hashes))})
        self._index = (task.name, index)
        return index

    def seed(self, task: Task, ref: SampleRef) -> int:
        return derive_seed(self.config.seed, task.name, ref.sample_id)

    def row(self, task: Task, ref: SampleRef, method: str, out: Outcome, content_hash: str | None) -> Row:
        teacher = self.config.teacher
        ok = out.error is None and out.prediction is not None
        scored = ok and task.ood_of is None  # an out-of-distribution sample has no right class
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
            correct=(out.prediction == ref.label) if scored else None,
            top5=list(out.top5),
            top5_correct=(ref.label in out.top5) if scored and out.top5 and len(task.classnames) >= TOP5_MIN_CLASSES else None,
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
            peak_memory_samples=None,
            device=str(self.device),
            precision=self.precision,
            worker=self.name,
            error=out.error,
            device_model=self.environment["device"],
            environment=self.environment_id,
            msp=out.msp,
            mcm=out.mcm,
            attack=self.attack_label,
            ood_of=task.ood_of,
        )


def _features(inputs: list[SampleInput], decoded: Decoded) -> Features:
    embeddings = torch.stack([s.teacher_embedding for s in inputs]) if inputs else torch.zeros(0)
    return Features(tuple(s.ref.sample_id for s in inputs), tuple(s.content_hash for s in inputs), embeddings,
                    dict(decoded.failed))


def _flop_teacher(teacher: Teacher) -> Teacher | None:
    """The worker's teacher rebuilt on the meta device, once, for counting FLOPs: the same architecture
    counts the same FLOPs without weights, memory or the slow attention kernel counting needs. None
    (count on the real teacher) for an architecture the meta device cannot build, with a line saying so."""
    try:
        return meta_teacher(teacher.config, teacher.source)
    except Exception as exc:
        print(f"apm-bench worker: FLOPs are counted on the device: {one_line(exc)}", file=sys.stderr, flush=True)
        return None


def _restart(exc: BaseException) -> None:
    """End this worker process at once (Ray counts it as a crash and restarts the actor on a healthy
    device context); flushing the message first so the driver's log says why."""
    print(f"apm-bench worker: device error, restarting: {one_line(exc)}", file=sys.stderr, flush=True)
    os._exit(70)
