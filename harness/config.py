"""Run configuration. Everything that can change a result is in `RunConfig` and its fingerprint;
how the run is executed (workers, cluster address, output folder) is in `ExecConfig` and is not."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


PRECISIONS = ("fp32", "bf16", "fp16")
"""--precision choices (harness/precision.py maps them to autocast dtypes)."""
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "apm-tiny"
    """open_clip architecture name (e.g. ViT-B-16), or the harness's own `apm-tiny`."""
    pretrained: str = "none"
    """open_clip tag (openai, laion2b_s34b_b88k), `hf-hub:ORG/REPO`, a local checkpoint file or
    open_clip model directory, or `none` for random weights drawn from `init_seed`."""
    precision: str = "fp32"
    """fp32, or fp16 / bf16 autocast for the networks' forward passes on GPU (CPU stays fp32).
    Scoring (normalise, cosine, softmax, top-k) is fp32 in every case. fp16 is what TPT and
    CLIP_benchmark ran by default; its training steps use a gradient scaler."""
    init_seed: int = 0
    """Seed of the random weights when pretrained is `none`: the same tiny teacher on every worker."""
    weights_sha256: str | None = None
    """Content hash of the weights (file, or the weight files of a directory), filled when the run is
    prepared: retrained weights under the same name or path make another fingerprint. None: random."""


@dataclass(frozen=True)
class ApmConfig:
    """The reconstructed APM settings (docs/apm-method.md); each one is a CLI flag."""

    recipe: str = "spec"
    """How the TTT loop runs. `spec`: the paper's description (fresh Adam, zero_grad every step, no
    schedule, bicubic resize, predict after the last update). `demo`: the authors' released demo
    (train_tta.py): gradients zeroed once per image so they accumulate, StepLR(200, 0.1), bilinear
    resize, prediction from the last training forward."""
    image_size: int = 448
    """APM input side S (resize, no crop)."""
    patch_size: int = 14
    """Trigger conv kernel and stride p; the grid has (S/p)^2 locations."""
    hidden: tuple[int, ...] = (4096, 2048, 1024)
    """Widths of the shared MLP's hidden layers (ReLU after each); the last layer maps to D."""
    pooling: str = "attention"
    """`attention` (learned query, 8 heads, fixed 2-D sin/cos code added) or `mean`."""
    heads: int = 8
    rgb_hidden: int = 256
    """Width of the RGB head (present in the network, weight 0 in TTT by default)."""
    rgb_weight: float = 0.0
    """Loss weight of the RGB reconstruction of each location's mean colour."""
    use_patch: bool = False
    """Append each location's own pixels to its query (the paper's figure; off in the spec)."""
    chunk_size: int = 0
    """Locations evaluated per chunk (0 = all at once). Chunks are checkpointed under grad, so
    memory stays bounded as the grid grows."""
    init_std: float = 0.01
    """Every parameter is drawn from N(0, init_std) before each sample."""
    steps: int = 20
    lr: float = 1e-4
    copies: int = 1
    """Identical copies of the image per step (the demo code uses 8)."""
    templates: str = "ensemble"
    """Class embeddings from the task's template ensemble, or `single` ("a photo of a {}.")."""
    batch_size: int = 0
    """Samples whose independent APMs train as one batched computation; 0 = fit the device, 1 = one
    at a time. Results equal one-at-a-time training up to float rounding."""


@dataclass(frozen=True)
class TptConfig:
    """Test-time prompt tuning (Shu et al., 2022) as its code does it; each one is a CLI flag."""

    views: int = 64
    """The original view plus views-1 augmented ones."""
    top: float = 0.1
    """Fraction of views kept: the int(views * top) lowest-entropy ones."""
    steps: int = 1
    lr: float = 5e-3
    weight_decay: float = 0.01
    """AdamW's; torch's default, as TPT's code leaves it."""
    ctx_init: str = "a photo of a"
    """The learnable context's initial words; their token count is the context length (4)."""
    augmix: str = "auto"
    """AugMix on the views: auto (on for the fine-grained sets, off for ImageNet), on, off."""
    min_scale: float = 0.08
    """Smallest area fraction of the random resized crops."""


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
    apm: ApmConfig = field(default_factory=ApmConfig)
    tpt: TptConfig = field(default_factory=TptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    shard_size: int = 16
    """Samples per shard: the unit of scheduling, teacher batching, and resume."""
    suite: str | None = None
    task_versions: tuple[tuple[str, str], ...] = ()
    """(task spec, task version) pairs, filled when tasks are resolved, so data changes show."""
    device_type: str | None = None
    """cpu or cuda: where the networks ran, resolved when the run starts. In the fingerprint, because
    devices differ in arithmetic; with `teacher.precision` it gives the effective precision (autocast
    applies on CUDA only)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict (JSON turns tuples into lists; they are turned back)."""
        parts = {"teacher": TeacherConfig, "apm": ApmConfig, "tpt": TptConfig, "data": DataConfig}
        values = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for name, kind in parts.items():
            if name in values:
                values[name] = kind(**{k: _tuples(v) for k, v in values[name].items()})
        return cls(**{k: v if k in parts else _tuples(v) for k, v in values.items()})

    def fingerprint(self) -> str:
        payload = self.to_dict()
        payload.pop("suite")  # a label only: the same tasks and settings give the same rows
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


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
