"""Run configuration. Everything that can change a result is in `RunConfig` and its fingerprint;
how the run is executed (workers, cluster address, output folder) is in `ExecConfig` and is not."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from harness.attack_config import AttackConfig
from harness.errors import HarnessError
from harness.models.teacher_config import PRECISIONS, TeacherConfig
from harness.settings import Settings, complete, method_kind_episodic, settings_class
from harness.streams import MAX_STREAMS, check_protocol

__all__ = ["PRECISIONS", "TeacherConfig", "DataConfig", "RunConfig", "ExecConfig", "DEVICES"]


DEVICES = ("auto", "cpu", "cuda")
NEWER_DEFAULTS = {"stream": "iid", "streams": 1, "feature_cache": False, "attack": None, "subset_seed": None}
"""Fields left out of the fingerprint at these values: runs made before them keep their fingerprints."""


@dataclass(frozen=True)
class DataConfig:
    """Which data a task reads. Where it lies on disk is not here (ExecConfig): moving a folder must
    not change a fingerprint, but reading another source or subset must."""

    source: str = "disk"
    """disk (the usual folder layouts) or hub (Hugging Face `datasets`)."""
    corruptions: str = "released"
    """ImageNet-C: the released JPEG folders, or `generated` from ImageNet val with imagecorruptions."""
    limit: int | None = None
    """At most this many samples per task, drawn stratified by class with a fixed seed."""
    hub_revision: str | None = None
    """Hub revision (commit) to pin; None uses each task's pinned default."""
    exif_transpose: bool = False
    """Turn images upright by their EXIF orientation tag before anything else. Off by default: the
    reference loaders (TPT, CLIP_benchmark, torchvision) score the pixels as stored."""


@dataclass(frozen=True)
class RunConfig:
    """What is evaluated. Two runs with equal fingerprints must produce equal rows."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    settings: Settings = ()
    """(method, its config dataclass) for every method of the run that has settings, completed with
    the defaults when the config is made (harness/methods/configs.py): so the manifest and the
    fingerprint hold the settings the rows were made with, and only those of the run's methods."""
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    shard_size: int = 16
    """Samples per shard: the unit of scheduling, teacher batching, and resume."""
    suite: str | None = None
    task_versions: tuple[tuple[str, str], ...] = ()
    """(task spec, task version) pairs, filled when tasks are resolved, so data changes show."""
    deterministic: bool = False
    """--deterministic: torch's deterministic algorithms and cuDNN kernels (harness.environment). In the
    fingerprint: those kernels may round differently from the default ones."""
    device_type: str | None = None
    """cpu or cuda: where the networks ran, resolved when the run starts. In the fingerprint, because
    devices differ in arithmetic; with `teacher.precision` it gives the effective precision (autocast
    applies on CUDA only)."""
    stream: str = "iid"
    """--stream: the order the online methods see each task's samples in (harness.streams). Episodic
    methods ignore it: their rows are the same for every protocol."""
    streams: int = 1
    """--streams N: streams per task (per run for `continual`), their seeds derived from `seed`."""
    feature_cache: bool = False
    """--feature-cache: every teacher embedding comes from the canonical shards' batches, read from or
    written to the cache (harness.engine.features); an embedding depends on its batch, so this is in
    the fingerprint, the cache's folder is not."""
    attack: AttackConfig | None = None
    """--attack: every image goes through this attack before the teacher or any method sees it
    (harness.models.pgd); the rows say so in `attack`. None: clean images."""
    subset_seed: int | None = None
    """The seed `--limit`'s stratified subset is drawn with (None: `seed`). `--seeds 0,1,2` runs the
    same config under each seed with this pinned to the first, so the seeds differ in their views,
    initialisations and streams, not in their samples."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", complete(self.methods, dict(self.settings)))
        check_protocol(self.stream)
        if not 1 <= self.streams <= MAX_STREAMS:
            raise HarnessError(f"--streams must lie in 1..{MAX_STREAMS:,}, not {self.streams}")

    @property
    def online(self) -> tuple[str, ...]:
        """The run's online methods (they see ordered streams), in the run's order."""
        return tuple(m for m in self.methods if not method_kind_episodic(m))

    @property
    def sample_seed(self) -> int:
        """What draws the samples (`--limit`'s subset, and so the shards): subset_seed, else seed."""
        return self.seed if self.subset_seed is None else self.subset_seed

    @property
    def episodic(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if method_kind_episodic(m))

    def settings_of(self, method: str) -> Any:
        """The method's config dataclass (None for a method without settings)."""
        return dict(self.settings).get(method)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["settings"] = {name: dataclasses.asdict(value) for name, value in self.settings}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict (JSON turns tuples into lists; they are turned back)."""
        parts = {"teacher": TeacherConfig, "data": DataConfig, "attack": AttackConfig}
        values = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for name, kind in parts.items():
            if name in values:
                values[name] = None if values[name] is None else kind(**{k: _tuples(v) for k, v in values[name].items()})
        settings = values.pop("settings", {})
        config = cls(**{k: v if k in parts else _tuples(v) for k, v in values.items()})
        given = {}
        for method, fields in settings.items():
            kind = settings_class(method)
            if kind is not None:
                given[method] = kind(**{k: _tuples(v) for k, v in fields.items()})
        return dataclasses.replace(config, settings=tuple(given.items()))

    def fingerprint(self) -> str:
        payload = self.to_dict()
        payload.pop("suite")  # a label only: the same tasks and settings give the same rows
        for name, default in NEWER_DEFAULTS.items():  # runs made before these fields keep their fingerprints
            if payload[name] == default:
                payload.pop(name)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExecConfig:
    """How a run is executed; none of this may change a per-sample result."""

    out_root: str = "results"
    run_id: str | None = None
    address: str | None = None
    """None starts a local Ray instance; otherwise the address of an existing cluster."""
    workers: int | None = None
    """CPU actors when no GPU is used; default: the CPUs Ray sees divided by threads_per_worker."""
    device: str = "auto"
    """auto (cuda when the cluster has GPUs), cpu, or cuda."""
    threads_per_worker: int = 1
    """torch intra-op threads per actor; fixed so that results do not depend on worker count."""
    cpus_per_worker: float | None = None
    """CPUs a GPU worker reserves for decoding and views; default its node's CPUs divided by its GPUs."""
    placement_timeout: float = 600.0
    """Seconds to wait for a first worker to be placed and loaded before giving up."""
    progress: bool = True
    data_root: str | None = None
    """Folder holding the datasets in their usual layouts; default $APM_BENCH_DATA."""
    splits_dir: str | None = None
    """Extra folder to look for CoOp split files in."""
    skip_missing: bool = False
    """Run the tasks whose data is found instead of refusing to start."""
    force_new: bool = False
    """When --run-id names a run with another config, start a fresh directory instead of refusing."""
    max_attempts: int = 3
    """Tries per shard before it is recorded as failed and the run goes on."""
    max_restarts: int = 2
    """Times Ray restarts a dead worker (which reloads its teacher) before it is retired."""
    feature_cache_dir: str | None = None
    """--feature-cache DIR: where the teacher's embeddings are cached (a folder every node sees)."""
    checkpoint_seconds: float = 60.0
    """How long a stream part runs before its online methods' states are checkpointed (a lost worker or
    an interrupt costs at most this much of a stream); no result depends on it."""
    allow_other_device: bool = False
    """Let a resume run on another GPU model than the run was started on (its rows may round
    differently; each row names its device)."""


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
