"""The rows a report reads, as one DuckDB view over the runs' Parquet files.

Reports aggregate: counts per cell, per class, per paired sample, medians per method. DuckDB runs those
group-bys and joins over a pyarrow dataset of the files, reading only the columns a query names (never
the `losses` or `top5` lists unless a figure asks for them) in streamed batches, within a memory limit
and spilling to disk beyond it. The paper's whole workload, 12 million rows, is reported this way
on a 2-core machine in bounded memory (bench/bench_scale.py), where loading it into pandas took 40 GB.

A RowSet can also wrap a pandas DataFrame of rows (tests and small callers), with the same queries."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pyarrow as pa

from harness.errors import HarnessError
from harness.store import SCHEMA

VIEW_COLUMNS = ("run_id", "task", "sample_id", "label", "method", "model", "pretrained", "correct", "top5_correct",
                "error", "seconds", "ttt_steps", "flops", "peak_memory_bytes", "device", "losses", "stream", "stream_id",
                "position", "confidence", "msp", "mcm", "attack", "ood_of")
"""What the views expose (plus `run`); a query reads only the ones it names. `rows` holds the
in-distribution rows, every accuracy is computed from; `all_rows` adds the out-of-distribution ones
(`ood_of` set: no right class), which only the trust table reads. In `rows` an attacked row's method
is named with its attack (`tpt [pgd:eps=1/255,...]`), so every table shows it apart from the clean
method, and a clean run and its attacked twin pool instead of counting a sample twice."""
IN_DISTRIBUTION = """CREATE VIEW rows AS
SELECT * REPLACE (CASE WHEN attack IS NULL THEN method ELSE method || ' [' || attack || ']' END AS method)
FROM all_rows WHERE ood_of IS NULL"""
MEMORY_LIMIT_ENV = "APM_BENCH_REPORT_MEMORY"
"""DuckDB's memory limit for a report (default 2GB); beyond it, aggregation spills to a temp folder."""


@dataclass(frozen=True)
class Orders:
    """The order lines and columns are shown in: runs as given, tasks and methods as the runs list
    them in their configs (or as they first appear in a DataFrame), teachers likewise."""

    runs: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    teachers: tuple[tuple[str, str], ...] = ()

    def rank(self, kind: str, value: object) -> tuple[int, str]:
        """Known values first in their order, others after them by name."""
        known = getattr(self, kind)
        return (known.index(value), "") if value in known else (len(known), str(value))


@dataclass
class RowSet:
    connection: duckdb.DuckDBPyConnection
    orders: Orders = field(default_factory=Orders)

    @classmethod
    def from_files(cls, files: Sequence[str], run_labels: bool = False, orders: Orders | None = None) -> RowSet:
        """Rows of Parquet files written in the store's schema (older files lacking a column read it as
        null). `run_labels`: each row's `run` is its run id (runs side by side); else "" (pooled)."""
        connection = _connect()
        relation = connection.read_parquet([literal_path(f) for f in files], union_by_name=True)
        relation.create_view("parquet_rows")
        present = set(relation.columns)
        columns = [c if c in present else f"NULL::{_duck_type(c)} AS {c}" for c in VIEW_COLUMNS]  # older files
        run = "run_id" if run_labels else "''"
        connection.execute(f"CREATE VIEW all_rows AS SELECT {run} AS run, {', '.join(columns)} FROM parquet_rows")
        connection.execute(IN_DISTRIBUTION)
        return cls(connection, orders or Orders())

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RowSet:
        """A DataFrame of rows (resultfiles.read_rows), with or without a `run` column."""
        if "run" not in frame.columns:
            frame = frame.assign(run="")
        fields = [pa.field("run", pa.string()), *(SCHEMA.field(c) for c in VIEW_COLUMNS)]
        table = pa.Table.from_pandas(frame.reindex(columns=[f.name for f in fields]), schema=pa.schema(fields),
                                     preserve_index=False)
        connection = _connect()
        connection.register("frame_rows", table)
        connection.execute("CREATE VIEW all_rows AS SELECT * FROM frame_rows")
        connection.execute(IN_DISTRIBUTION)
        teachers = tuple(dict.fromkeys(zip(frame["model"], frame["pretrained"])))
        orders = Orders(tuple(dict.fromkeys(frame["run"])), tuple(dict.fromkeys(frame["task"])),
                        tuple(dict.fromkeys(frame["method"])), teachers)
        return cls(connection, orders)

    def query(self, sql: str, params: Sequence[object] | None = None) -> pd.DataFrame:
        """A query over the view `rows`; results are small (aggregates), returned as a DataFrame."""
        return self.connection.execute(sql, params or []).df()

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM rows").fetchone()[0])


def _duck_type(column: str) -> str:
    kind = SCHEMA.field(column).type
    if pa.types.is_list(kind):
        return "FLOAT[]" if pa.types.is_floating(kind.value_type) else "INTEGER[]"
    return {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN",
            "float": "FLOAT"}[str(kind)]


def as_rowset(rows: RowSet | pd.DataFrame) -> RowSet:
    return rows if isinstance(rows, RowSet) else RowSet.from_frame(rows)


def _connect() -> duckdb.DuckDBPyConnection:
    threads = max(1, os.cpu_count() or 1)
    limit = os.environ.get(MEMORY_LIMIT_ENV, "2GB")
    try:
        return duckdb.connect(config={"threads": threads, "memory_limit": limit})
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"{MEMORY_LIMIT_ENV}={limit!r} is not a memory size such as 2GB or 500MB ({first})") from None


def literal_path(path: str) -> str:
    """`path` as a DuckDB file pattern that matches only itself. DuckDB's readers expand `*`, `?` and
    `[...]` in every path they are given, so the report of run `h[12]` would read the files of run
    `h1`; inside brackets each of those characters stands for itself."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in str(path))


def in_list(values: Sequence[str]) -> tuple[str, list[str]]:
    """A `col IN (?, ?, ...)` placeholder list and its parameters (never values pasted into SQL)."""
    return "(" + ", ".join("?" for _ in values) + ")", list(values)
