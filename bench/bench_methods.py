"""Per-sample cost of every method at the smoke size, and its FLOPs at the paper's teacher.

    python bench/bench_methods.py          # about two minutes on 2 CPU cores

Each method runs on the smoke suite's 48 drawn shapes with its shipped teacher (`apm-mini`,
`synthetic-teacher`) in one worker on one torch thread, without Ray (the worker's own code:
ShardWorker.process), so the seconds are the method's, not start-up's. The view-based methods run at
their defaults (64 views); APM at the smoke suite's size; the online methods on one iid stream of the
48 shapes, in order (a stream part: the worker's own code too). Printed per method: median seconds per
sample (the teacher's share included, as on every row), counted GFLOPs per sample, top-1 on the 48
shapes, and GFLOPs per sample with a ViT-B/16 teacher at the paper's settings (counted on torch's
meta device; APM at the paper's 448 px, 20 steps), with each one's ratio to zero-shot."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import RunConfig, TeacherConfig  # noqa: E402
from harness.engine.shards import plan_shards  # noqa: E402
from harness.engine.stream_parts import part, plan_streams  # noqa: E402
from harness.engine.worker import RunIdentity, ShardWorker  # noqa: E402
from harness.methods.configs import ApmConfig, RlcfConfig  # noqa: E402
from harness.plan import counted_flops  # noqa: E402
from tasks.registry import SUITES, resolve_task  # noqa: E402

EPISODIC = ("zeroshot", "ensemble", "tpt", "c-tpt", "r-tpt", "tps", "rlcf", "ttl", "zero", "mta", "apm")
ONLINE = ("tda", "dmn-weak", "dmn", "onzeta", "boostadapter", "dpe", "ecalp", "dynaprompt")
METHODS = EPISODIC + ONLINE


def measure() -> dict[str, tuple[float, float, float]]:
    """method -> (median seconds per sample, GFLOPs per sample, top-1 %) at the smoke size."""
    smoke = SUITES.get("smoke")
    task = resolve_task("synthetic")
    config = RunConfig(tasks=(task.name,), methods=METHODS, teacher=TeacherConfig(smoke.model, smoke.pretrained),
                       settings=(("apm", ApmConfig(**smoke.settings["apm"])), ("rlcf", RlcfConfig(reward_model="teacher"))),
                       shard_size=48)
    torch.set_num_threads(1)
    worker = ShardWorker(config, {task.name: task}, RunIdentity("bench", "f" * 16, "bench"))
    worker.process(plan_shards([task], 4)[0])  # warm-up: classifiers, learners, FLOPs counted once
    stream = plan_streams(config, [task])[0]
    worker.process(part(config, stream, 0, None, 3600.0))
    start = time.perf_counter()
    rows = worker.process(plan_shards([task], 48)[0]).to_pylist()
    rows += worker.process(part(config, stream, 0, None, 3600.0)).table.to_pylist()
    print(f"48 samples x {len(METHODS)} methods in {time.perf_counter() - start:.1f} s (one worker, one thread)")
    out = {}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        out[method] = (statistics.median(r["seconds"] for r in mine), mine[0]["flops"] / 1e9,
                       100 * sum(r["correct"] for r in mine) / len(mine))
    return out


def paper_flops() -> dict[str, float]:
    """method -> GFLOPs per sample with ViT-B/16 and each method's defaults, on an ImageNet-sized task."""
    task = resolve_task("synthetic")
    config = RunConfig(tasks=(task.name,), methods=METHODS, teacher=TeacherConfig("ViT-B-16", "none"))  # RLCF: ViT-L-14 reward
    return {method: flops / 1e9 for (method, _), flops in counted_flops(config, [task], {task.name: len(task.samples())}).items()}


def main() -> None:
    measured = measure()
    paper = paper_flops()
    base_s, base_f, _ = measured["zeroshot"]
    print(f"\nPer sample, smoke size (apm-mini, 64 px), CPU ({torch.get_num_threads()} thread); "
          "ViT-B/16 column: FLOPs at the paper's teacher (12 classes here; text cost grows with classes)\n")
    print("| method | kind | s/sample | x zero-shot | GFLOPs/sample | top-1 (48 shapes) | GFLOPs/sample, ViT-B/16 | x zero-shot |")
    print("|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        seconds, gflops, top1 = measured[method]
        kind = "online" if method in ONLINE else "episodic"
        print(f"| `{method}` | {kind} | {seconds:.4f} | {seconds / base_s:.1f} | {gflops:.3f} | {top1:.1f}% | "
              f"{paper[method]:.1f} | {paper[method] / paper['zeroshot']:.0f} |")


if __name__ == "__main__":
    main()
