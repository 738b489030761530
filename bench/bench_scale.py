"""The paper's whole workload on a 2-core machine: a synthetic run of N rows in the real row schema,
reported by `apm-bench report` (plain pivots, and the Table 2 layout), with wall time and peak memory
for several N; and the driver's cost per shard when dispatching to Ray actors.

    python bench/bench_scale.py                       # N = 0.1, 1, 3, 12 million rows (about 10 minutes)
    python bench/bench_scale.py --rows 1000000        # one size

The paper's three tables are about 974,000 test images per teacher; with four methods and three
teachers, 12 million rows. The synthetic runs have the paper's 29 tasks (ImageNet-C's 15 columns
carry most rows), 3 teachers, 4 methods, APM rows with a 20-step loss trajectory, top-5 lists, a few
error rows, written as a finished run is left: segments of about a million rows."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import resultfiles, rundir, store# noqa: E402
from tasks.finegrained import FINE_GRAINED  # noqa: E402
from tasks.imagenet import NATURAL_SHIFT  # noqa: E402
from tasks.imagenet_c import IMAGENET_C  # noqa: E402

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
TASKS = IMAGENET_C + NATURAL_SHIFT + FINE_GRAINED
WEIGHT = {t: (50.0 if t.startswith("imagenet-c") else 20.0 if t in NATURAL_SHIFT else 2.6) for t in TASKS}
"""Relative task sizes, as in the paper (ImageNet-C columns 50,000 images; fine-grained a few thousand)."""
TEACHERS = (("ViT-B-16", "openai"), ("ViT-L-14", "openai"), ("ViT-H-14-quickgelu", "dfn5b"))
METHODS = ("zeroshot", "ensemble", "tpt", "apm")
STEPS = 20
SEGMENT_ROWS = 1_000_000


def _block(task: str, samples: int, model: str, pretrained: str, method: str, rng: np.random.Generator) -> pa.Table:
    """All rows of one (task, teacher, method), built column by column (no Python object per row)."""
    n = samples
    ids = pa.array([f"c{i % 1000:04d}/img_{i:07d}.JPEG" for i in range(n)])
    labels = (np.arange(n) % 1000).astype(np.int32)
    correct = rng.random(n) < (0.6 + 0.05 * METHODS.index(method))
    prediction = np.where(correct, labels, (labels + 1) % 1000).astype(np.int32)
    error = np.where(rng.random(n) < 1e-4, "cannot decode image", None)
    const = lambda value, kind=pa.string(): pa.array(np.full(n, value, dtype=object), kind)  # noqa: E731
    top5 = pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(prediction, 5)), 5).cast(pa.list_(pa.int32()))
    steps = STEPS if method == "apm" else 0
    losses = np.abs(rng.normal(1.0, 0.1, (n, steps))).astype(np.float32).cumprod(axis=1)[:, ::-1].reshape(-1)
    offsets = pa.array(np.arange(n + 1) * steps, pa.int32())
    columns = {
        "run_id": const("scale"), "fingerprint": const("f" * 16), "code_version": const("bench"), "task": const(task),
        "task_version": const("1"), "data_source": const("disk"), "sample_id": ids, "content_hash": const("h"),
        "label": pa.array(labels), "n_classes": pa.array(np.full(n, 1000, np.int32)), "protocol": const("clip-imagenet"),
        "method": const(method), "model": const(model), "pretrained": const(pretrained), "weights_source": const("tag"),
        "weights_sha256": const("0" * 64), "seed": pa.array(np.arange(n, dtype=np.int64)),
        "prediction": pa.array(prediction), "correct": pa.array(correct), "top5": top5,
        "top5_correct": pa.array(correct | (rng.random(n) < 0.5)), "confidence": pa.array(rng.random(n)),
        "prediction_before": pa.array(labels), "n_templates": pa.array(np.full(n, 80, np.int32)),
        "template_set": const("openai-imagenet-80"), "ttt_steps": pa.array(np.full(n, steps, np.int32)),
        "loss_first": pa.array(np.full(n, 1.0)), "loss_last": pa.array(np.full(n, 0.5)),
        "losses": pa.ListArray.from_arrays(offsets, pa.array(losses, pa.float32())),
        "seconds": pa.array(rng.gamma(2.0, 0.05 + 0.5 * (method == "apm"), n)),
        "flops": pa.array(np.full(n, 2 * 10**10, np.int64)), "peak_memory_bytes": pa.array(np.full(n, None), pa.int64()),
        "peak_memory_samples": pa.array(np.full(n, None), pa.int32()), "precision": const("bf16"),
        "device": const("cuda:0"), "worker": const("node:1"), "error": pa.array(error, pa.string()),
        "device_model": const("NVIDIA H100 80GB HBM3"), "environment": const("0123456789ab"),
    }
    return pa.table({f.name: columns[f.name].cast(f.type) for f in store.SCHEMA}, schema=store.SCHEMA)


def write_run(root: Path, rows: int, seed: int = 0) -> Path:
    """A finished run of about `rows` rows under root/scale-N, in segment files."""
    rng = np.random.default_rng(seed)
    per_unit = rows / (len(TEACHERS) * len(METHODS) * sum(WEIGHT.values()))
    run_dir = root / f"scale-{rows}"
    rundir.write_manifest(run_dir, {"run_id": run_dir.name, "started": "2026-01-01T00:00:00", "finished": "x",
                                   "fingerprint": "f" * 16,
                                   "config": {"tasks": list(TASKS), "methods": list(METHODS)}})
    pending, count, segment = [], 0, 0
    for model, pretrained in TEACHERS:
        for task in TASKS:
            samples = max(1, round(per_unit * WEIGHT[task]))
            for method in METHODS:
                pending.append(_block(task, samples, model, pretrained, method, rng))
                count += samples
                if count >= SEGMENT_ROWS:
                    segment = _flush(run_dir, pending, segment)
                    pending, count = [], 0
    if pending:
        _flush(run_dir, pending, segment)
    return run_dir


def _flush(run_dir: Path, tables: list[pa.Table], segment: int) -> int:
    """One segment, written and recorded as a finished run leaves it (so the report verifies it too)."""
    table = pa.concat_tables(tables)
    metadata = {resultfiles.SEGMENT_KEY: f'["s-{segment:05d}"]'.encode(), resultfiles.FINGERPRINT_KEY: b"f" * 16}
    path = resultfiles.write_parquet_atomic(table, run_dir / rundir.SEGMENTS / f"all.{segment:05d}.parquet", metadata,
                                       row_group_size=resultfiles.SEGMENT_ROW_GROUP)
    resultfiles.record(run_dir, path, [f"s-{segment:05d}"], table.num_rows, "f" * 16)
    return segment + 1


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak resident memory (MB) of one child process, and its stderr's last line. The
    peak is the child's own VmHWM, polled: a forked child's rusage would count this process's pages."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().strip().splitlines() if proc.stderr else []
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {err[-1] if err else proc.returncode}")
    return seconds, peak / 1024, err[-1] if err else ""


def dispatch_overhead(shards: int = 2000) -> float:
    """Driver seconds per shard when the actors do nothing: what the engine adds to each shard."""
    from harness.config import ExecConfig
    from harness.engine.cluster import ray_session
    from harness.engine.dispatch import dispatch
    from harness.engine.shards import Shard

    class Echo:
        def prefetch(self, shard: Shard) -> None:
            return None

        def info(self) -> dict:
            return {}

        def process(self, shard: Shard) -> pa.Table:
            return store.SCHEMA.empty_table()

    with ray_session(ExecConfig()):  # the harness's own local instance: loopback, private token and folders
        import ray  # after ray_session has set the environment Ray reads when it is imported

        actors = [ray.remote(num_cpus=1)(Echo).remote() for _ in range(2)]
        ray.get([a.info.remote() for a in actors])
        start = time.perf_counter()
        dispatch(actors, [Shard(f"t-{i:05d}", "t", ()) for i in range(shards)], lambda shard, table: None)
        return (time.perf_counter() - start) / shards


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000, 3_000_000, 12_000_000])
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; report memory limit {os.environ.get('APM_BENCH_REPORT_MEMORY', '2GB')} (DuckDB)")
    print("| rows | files | write s | report s (pivots) | peak MB | report s (--table imagenet-c) | peak MB | s per M rows |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            start = time.perf_counter()
            run_dir = write_run(Path(tmp), rows)
            written = time.perf_counter() - start
            actual = sum(pq.ParquetFile(p).metadata.num_rows for p in resultfiles.row_files(run_dir))
            plain = measure([EXE, "report", str(run_dir), "--format", "csv"])
            table = measure([EXE, "report", str(run_dir), "--table", "imagenet-c", "--format", "csv", "--no-reference"])
            print(f"| {actual:,} | {len(resultfiles.row_files(run_dir))} | {written:.1f} | {plain[0]:.1f} | {plain[1]:.0f} | "
                  f"{table[0]:.1f} | {table[1]:.0f} | {plain[0] / actual * 1e6:.2f} |", flush=True)
            shutil.rmtree(run_dir)
    print(f"driver overhead per shard (2 echo actors, 2,000 shards): {1000 * dispatch_overhead():.2f} ms")
    print(f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
