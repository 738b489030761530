"""One result row: a (sample, method) with the provenance needed to trust and pair it. Plain Python
(no pyarrow), so the worker and bench/gpu_check.py can make rows where only torch is installed; the
Parquet schema they are written in is harness.store's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One (sample, method) result with the provenance needed to trust and pair it."""

    run_id: str
    fingerprint: str
    code_version: str
    task: str
    task_version: str
    data_source: str
    sample_id: str
    content_hash: str | None
    label: int
    n_classes: int
    """Classes the task is scored over: top-5 is recorded only where there are at least 5."""
    protocol: str
    """Where the class names and templates came from (`clip-imagenet`, `coop`, `clip-benchmark`, ...)."""
    method: str
    model: str
    pretrained: str
    weights_source: str
    weights_sha256: str | None
    """Content hash of the teacher's weights (None: random weights from the config's seed)."""
    seed: int
    prediction: int | None
    correct: bool | None
    top5: list[int]
    top5_correct: bool | None
    confidence: float | None
    prediction_before: int | None
    n_templates: int
    template_set: str | None
    """The name of the prompts the classifier came from (or, for a learned prompt, its start)."""
    ttt_steps: int
    loss_first: float | None
    loss_last: float | None
    losses: list[float]
    seconds: float
    flops: int | None
    peak_memory_bytes: int | None
    """The method's peak device memory above what was allocated when it started (CUDA only)."""
    peak_memory_samples: int | None
    """How many samples that peak covers (a batch of APMs trained together, or one sample)."""
    device: str
    precision: str
    """What the networks computed in: the requested precision on CUDA, fp32 on a CPU."""
    worker: str
    error: str | None
    device_model: str | None = None
    """The GPU's model (or the CPU's), as the worker's node reports it."""
    environment: str | None = None
    """Which device and software the row was computed with: a key of the manifest's `environments`
    (GPU model, CUDA, cuDNN and driver versions, the node's package versions)."""
    stream: str | None = None
    """An online method's stream protocol (`iid`, `dirichlet:0.1`, ...); None for an episodic method."""
    stream_id: int | None = None
    """Which of the run's streams (0 .. --streams - 1)."""
    stream_seed: int | None = None
    """The seed the stream's order was drawn from (harness.streams.stream_seed)."""
    position: int | None = None
    """The sample's place in its stream (0 first; across the tasks of a continual stream)."""
    msp: float | None = None
    """The maximum-softmax score of the method's final output (the OOD detector's score; README, "Trust")."""
    mcm: float | None = None
    """The MCM score of the final logits (softmax at temperature 1 on the cosine scale); None where the
    output is not logits."""
    attack: str | None = None
    """The attack the image went through before any method saw it (`pgd:eps=...`), None for clean pixels."""
    ood_of: str | None = None
    """For an out-of-distribution sample: the in-distribution task whose classes it was scored against
    (its label is -1 and `correct` null); None for an in-distribution sample."""
