"""What N streams of an online method cost: N = 1 and N = 20 streams of TDA on one task, without the
feature cache, with it cold (empty: the run makes it, one pass of the image tower), and with it warm
(filled by an earlier run), and the ratios N=20 / N=1 per cache mode.

    python bench/bench_streams.py                       # a few minutes on 2 cores
    python bench/bench_streams.py --streams 10 --workers 1 --stream dirichlet:0.1
    python bench/bench_streams.py --task synthetic:40 --model apm-tiny --pretrained none

The default workload is `fashion-mnist-c/fog/5` (--limit 1000) with the teacher `apm-bench teacher
train --data fashion-mnist` writes (apm-mini, --pretrained fashion-mnist-teacher); without it,
`synthetic:40` (480 samples) with a random apm-tiny. It says which it used.

Each measurement is one `harness.engine.runner.run()` call, timed whole (planning, its Ray actors
loading the teacher, the streams, writing rows and states) with methods=("tda",) only, so no episodic
shard runs beside the streams; on the CPU, with a fresh temporary out_root per run and a fresh cache
folder per cold run. Ray is started once before the first run (its start is printed, not counted),
and a small untimed run first pays the driver's one-off imports; the same small run again is printed
as a run's fixed cost (actors started, teacher loaded, files written), and each time is also shown
above it. A run uses min(--workers, N) workers.

The aim: 20 streams with the cache cost under 1.5x one stream. Numbers, not judgements: the
machine is shared, so they are indicative."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import DataConfig, ExecConfig, RunConfig, TeacherConfig  # noqa: E402
from harness.engine.cluster import ray_session  # noqa: E402
from harness.engine.runner import RunSummary, run  # noqa: E402
from harness.models.sources import trained_teacher_dir  # noqa: E402

TEACHER = "fashion-mnist-teacher"
REAL = {"task": "fashion-mnist-c/fog/5", "model": "apm-mini", "pretrained": TEACHER, "limit": 1000}
FALLBACK = {"task": "synthetic:40", "model": "apm-tiny", "pretrained": "none", "limit": None}
MODES = ("none", "cold", "warm")


def workload(args: argparse.Namespace) -> tuple[dict, str]:
    """The task, teacher and limit to run, and a line saying where they come from."""
    folder = trained_teacher_dir(TEACHER)
    if (folder / "open_clip_config.json").is_file():
        base, why = REAL, f"the trained teacher found in {folder}"
    else:
        base = FALLBACK
        why = f"fallback: no trained teacher in {folder} (make it: apm-bench teacher train --data fashion-mnist --steps 1200)"
    given = {k: getattr(args, k) for k in base if getattr(args, k) is not None}
    chosen = {**base, **given}
    if chosen["limit"] is not None and chosen["limit"] <= 0:
        chosen["limit"] = None  # --limit 0: the whole task
    return chosen, why + (f"; given: {', '.join(f'--{k} {v}' for k, v in given.items())}" if given else "")


def timed(config: RunConfig, execution: ExecConfig) -> tuple[float, RunSummary]:
    start = time.perf_counter()
    summary = run(config, execution)
    return time.perf_counter() - start, summary


def cache_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.safetensors")) if folder.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help=f"task spec (default {REAL['task']}, or {FALLBACK['task']} without the teacher)")
    parser.add_argument("--model", help=f"teacher architecture (default {REAL['model']}, or {FALLBACK['model']})")
    parser.add_argument("--pretrained", help=f"teacher weights (default {TEACHER}, or none)")
    parser.add_argument("--limit", type=int, help="samples of the task (default 1000; the fallback's 480 all; 0: all)")
    parser.add_argument("--streams", type=int, default=20, help="the larger N (default 20; the smaller is 1)")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers a run may use (default 2)")
    parser.add_argument("--stream", default="iid", help="stream protocol (default iid)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    chosen, why = workload(args)
    counts = sorted({1, args.streams})
    teacher = TeacherConfig(chosen["model"], chosen["pretrained"])
    base = RunConfig(tasks=(chosen["task"],), methods=("tda",), teacher=teacher,
                     data=DataConfig(limit=chosen["limit"]), stream=args.stream)
    print(f"machine: CPU only, {os.cpu_count()} cores ({platform.machine()}, {platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, 1 torch thread per worker (ExecConfig.threads_per_worker; this process has "
          f"{torch.get_num_threads()}), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"workload: {chosen['task']}, limit {chosen['limit'] or 'none'}, teacher {chosen['model']} / "
          f"{chosen['pretrained']} ({why})")
    print(f"method tda only, stream {args.stream}, N in {counts}, --workers {args.workers}, shard size "
          f"{base.shard_size}, checkpoint every {ExecConfig().checkpoint_seconds:g} s")

    root = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    results: dict[tuple[int, str], tuple[float, RunSummary, int]] = {}
    try:
        start = time.perf_counter()
        with ray_session(ExecConfig()):
            print(f"Ray started in {time.perf_counter() - start:.1f} s (not counted)", flush=True)
            serial = iter(range(10**6))

            def execution(cache: Path | None) -> ExecConfig:
                return ExecConfig(out_root=str(root / f"out{next(serial)}"), run_id="bench", device="cpu",
                                  workers=args.workers, progress=False,
                                  feature_cache_dir=str(cache) if cache else None)

            warmup = dataclasses.replace(base, data=DataConfig(limit=base.shard_size))
            seconds, _ = timed(warmup, execution(None))
            print(f"warm-up run ({base.shard_size} samples, 1 stream, no cache): {seconds:.1f} s (not counted)",
                  flush=True)
            floor, _ = timed(warmup, execution(None))
            print(f"a run's fixed cost (the same run again: actors, teacher, planning, files): {floor:.1f} s", flush=True)
            for n in counts:
                plain = dataclasses.replace(base, streams=n)
                cached = dataclasses.replace(plain, feature_cache=True)
                cache = root / f"features{n}"
                for mode, config in (("none", plain), ("cold", cached), ("warm", cached)):
                    seconds, summary = timed(config, execution(cache if config.feature_cache else None))
                    results[(n, mode)] = (seconds, summary, cache_files(cache) if config.feature_cache else 0)
                    print(f"  N={n} cache {mode}: {seconds:.1f} s, {summary.rows_written:,} rows, "
                          f"{summary.errors} error rows, {len(summary.failed)} failed", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    samples = next(iter(results.values()))[1].samples
    print(f"\n{samples:,} samples per stream; seconds are wall time of one run() each; above fixed: less the "
          f"{floor:.1f} s fixed cost\n")
    print("| N | cache | workers | seconds | seconds per stream | above fixed | rows | cache files |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, mode), (seconds, summary, files) in results.items():
        print(f"| {n} | {mode} | {min(args.workers, n)} | {seconds:.1f} | {seconds / n:.2f} | {seconds - floor:.1f} | "
              f"{summary.rows_written:,} | {files if mode != 'none' else '-'} |")
    if len(counts) == 2:
        small, large = counts
        print(f"\nN={large} / N={small}, per cache mode (wall time):")
        for mode in MODES:
            a, b = results[(large, mode)][0], results[(small, mode)][0]
            net = f"{(a - floor) / (b - floor):.2f}x" if b > floor else "n/a"
            print(f"  {mode}: {a / b:.2f}x (above the fixed cost: {net})")
        print(f"  N={large} warm / N={small} none (streams from the cache against one stream without it): "
              f"{results[(large, 'warm')][0] / results[(small, 'none')][0]:.2f}x")
        print(f"  N={large} cold / N={small} none: {results[(large, 'cold')][0] / results[(small, 'none')][0]:.2f}x")
        print(f"  N={large}: none / warm {results[(large, 'none')][0] / results[(large, 'warm')][0]:.2f}x, "
              f"none / cold {results[(large, 'none')][0] / results[(large, 'cold')][0]:.2f}x")
        print("  (the aim: N=20 with the cache under 1.5x one stream)")


if __name__ == "__main__":
    main()
