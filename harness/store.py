"""The row schema: one row per (sample, method), with its provenance, as Parquet holds it. Where rows
are written and read is harness.resultfiles'; the run directory around them is harness.rundir's."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from harness.row import Row

__all__ = ["REQUIRED", "Row", "SCHEMA", "rows_to_table", "schema_problem"]


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
        ("device_model", pa.string()),
        ("environment", pa.string()),
        ("stream", pa.string()),
        ("stream_id", pa.int32()),
        ("stream_seed", pa.int64()),
        ("position", pa.int64()),
        ("msp", pa.float64()),
        ("mcm", pa.float64()),
        ("attack", pa.string()),
        ("ood_of", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in dataclasses.fields(Row)], "Row and SCHEMA must list the same columns"


def rows_to_table(rows: list[Row]) -> pa.Table:
    """Column by column: `dataclasses.asdict` deep-copies every row (a third of a stream's time once its
    features are cached)."""
    return pa.Table.from_pydict({name: [getattr(r, name) for r in rows] for name in SCHEMA.names}, schema=SCHEMA)


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
