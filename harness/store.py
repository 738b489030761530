"""The row schema: one row per (sample, method), with its provenance. Where rows are written and
read is harness.resultfiles'; the run directory around them is harness.rundir's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyarrow as pa


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


SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("fingerprint", pa.string()),
        ("code_version", pa.string()),
        ("task", pa.string()),
        ("task_version", pa.string()),
        ("data_source", pa.string()),
        ("sample_id", pa.string()),
        ("content_hash", pa.string()),
        ("label", pa.int32()),
        ("n_classes", pa.int32()),
        ("protocol", pa.string()),
        ("method", pa.string()),
        ("model", pa.string()),
        ("pretrained", pa.string()),
        ("weights_source", pa.string()),
        ("weights_sha256", pa.string()),
        ("seed", pa.int64()),
        ("prediction", pa.int32()),
        ("correct", pa.bool_()),
        ("top5", pa.list_(pa.int32())),
        ("top5_correct", pa.bool_()),
        ("confidence", pa.float64()),
        ("prediction_before", pa.int32()),
        ("n_templates", pa.int32()),
        ("template_set", pa.string()),
        ("ttt_steps", pa.int32()),
        ("loss_first", pa.float64()),
        ("loss_last", pa.float64()),
        ("losses", pa.list_(pa.float32())),
        ("seconds", pa.float64()),
        ("flops", pa.int64()),
        ("peak_memory_bytes", pa.int64()),
        ("peak_memory_samples", pa.int32()),
        ("device", pa.string()),
        ("precision", pa.string()),
        ("worker", pa.string()),
        ("error", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in dataclasses.fields(Row)], "Row and SCHEMA must list the same columns"


def rows_to_table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist([dataclasses.asdict(r) for r in rows], schema=SCHEMA)


REQUIRED = ("task", "sample_id", "method", "model", "pretrained", "correct", "error")
"""Columns every result file must hold: what a report pairs and counts by. Files of older versions
may lack others (read as null)."""


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a result file's columns cannot be read as rows, in a few words; None when they can: each
    column this schema knows has its type, and the required ones are there."""
    missing = [name for name in REQUIRED if name not in schema.names]
    if missing:
        return f"no column {', '.join(missing)}"
    for field in schema:
        if field.name in SCHEMA.names and not field.type.equals(SCHEMA.field(field.name).type):
            return f"column {field.name} is {field.type}, not {SCHEMA.field(field.name).type}"
    return None
