"""What a run will be, said before its first shard: samples, methods, about how long on the workers it
will have, and what makes it slow or meaningless. APM at the paper's size on a random teacher takes
about 30 s a sample on a CPU; a user should hear that, and how to ask for less, before waiting for it.

The time is the plan's (harness/plan.py): an earlier run's median seconds per sample with the same
teacher and settings, or else the FLOPs per sample counted on the meta device at CPU_GFLOPS per torch
thread. It is printed on the run's own path, which imports torch and open_clip anyway; no model is
loaded for it."""

from __future__ import annotations

import os
from pathlib import Path

from harness import resultfiles
from harness.config import ExecConfig, RunConfig
from harness.engine.shards import plan_shards
from harness.plan import CostLine, TaskLine, cost_lines
from harness.presets import PRESETS
from tasks.base import Task

CPU_GFLOPS = 60.0
"""GFLOP/s one torch thread of a CPU sustains on the arithmetic a method's FLOPs count, assumed where no
earlier run measured the method. Measured on the project's 2-core machine: APM at the paper's size on
`apm-tiny` (1,672 GFLOPs a sample) took 27-29 s a sample on one thread, about 60 GFLOP/s; methods whose
time goes to Python and view making (TPT on a tiny teacher) reach less, but cost seconds, not minutes."""


def workers(execution: ExecConfig, shards: int) -> int | None:
    """CPU workers a local instance will start (the machine's CPUs over --threads, at most --workers and
    the shards to do); None where a cluster (--address) or a GPU decides."""
    if execution.address is not None or execution.device == "cuda" or (execution.device == "auto" and _has_gpu()):
        return None
    fit = max(1, (os.cpu_count() or 1) // execution.threads_per_worker)
    return max(1, min(execution.workers or fit, fit, shards))


def _has_gpu() -> bool:
    import torch  # the run imports it next in any case

    return torch.cuda.is_available()


def remaining(config: RunConfig, execution: ExecConfig, tasks: list[Task]) -> list[TaskLine]:
    """Per task, the samples and shards still to do (a resumed run, or a --run-id that exists, has some done)."""
    done: set[str] = set()
    if execution.run_id is not None:
        run_dir = Path(execution.out_root) / execution.run_id
        if run_dir.is_dir():
            done = resultfiles.done_shards(run_dir)
    shards = [s for s in plan_shards(tasks, config.shard_size, config.data.limit, config.sample_seed) if s.shard_id not in done]
    out = []
    for task in tasks:
        mine = [s for s in shards if s.task == task.name]
        samples = sum(len(s.refs) for s in mine)
        out.append(TaskLine(task.name, samples, len(mine), samples * len(config.methods)))
    return out


def estimate(config: RunConfig, execution: ExecConfig, tasks: list[Task]) -> list[str]:
    """The lines to print before the first shard: the estimate, then notes."""
    lines = remaining(config, execution, tasks)
    samples, shards = sum(x.samples for x in lines), sum(x.shards for x in lines)
    count = workers(execution, shards)
    threads = execution.threads_per_worker
    runs = [p.parent for p in Path(execution.out_root).glob("*/manifest.json")]
    costs = cost_lines(config, lines, tasks, runs, CPU_GFLOPS * threads / 1000 if count else None)
    methods = len(config.methods)
    head = (f"about {samples:,} sample(s) x {methods} method(s) ({', '.join(config.methods)}) in {shards} shard(s)")
    if config.online:
        head += f", the online method(s) on {config.streams} {config.stream} stream(s) per task"
    out = [head + _time(costs, count, threads)]
    if config.teacher.pretrained == "none":
        out.append(f"note: the teacher {config.teacher.model} has random weights (--pretrained none): its accuracies "
                   "are chance; --suite smoke uses a trained one, --pretrained gives real weights")
    apm = next((c for c in costs if c.method == "apm"), None)
    if count and apm is not None and apm.hours and apm.hours * 3600 / samples > 5 and _larger_than_small(config):
        out.append(f"note: APM at this size costs ~{apm.hours * 3600 / max(samples, 1):.0f} s a sample on a CPU "
                   "worker; --set apm.preset=cpu-small is the suites' small CPU APM (`apm-bench ls methods apm`)")
    return out


def _time(costs: list[CostLine], count: int | None, threads: int) -> str:
    if any(c.hours is None for c in costs):
        return "; no time estimate (`apm-bench plan --device-tflops N` for one)"
    hours = sum(c.hours or 0.0 for c in costs)
    measured = [c for c in costs if c.seconds is not None]
    basis = ("from earlier runs' seconds per sample" if len(measured) == len(costs) else
             f"from FLOPs at {CPU_GFLOPS * threads:g} GFLOP/s per worker, assumed for a CPU"
             + ("" if not measured else f", and earlier runs' seconds for {', '.join(c.method for c in measured)}"))
    if count is None:
        return f", {_duration(hours)} of worker time ({basis})"
    return f", {_duration(hours / count)} on {count} CPU worker(s) ({basis})"


def _duration(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 30:
        return "under a minute"
    if seconds < 3600:
        return f"~{max(1, round(seconds / 60))} min"
    return f"~{hours:.1f} h"


def _larger_than_small(config: RunConfig) -> bool:
    settings = config.settings_of("apm")
    small = PRESETS["apm"].get("cpu-small").fields
    return settings is not None and settings.image_size > small["image_size"]
