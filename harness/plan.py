"""`apm-bench plan` (run --dry-run): what a run would do and what it would cost, before it starts.

Per task: samples, shards, rows. Per method: device-hours, from the median seconds per sample of the
newest earlier run with the same teacher and the same method settings, or else from FLOPs per sample
(counted on a model built on torch's meta device: no weights, no memory) and a stated device peak.
Nothing is loaded beyond what listing the tasks needs, and nothing is written."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness import resultfiles, rundir
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.engine.shards import plan_shards
from harness.report.rowset import RowSet, in_list
from tasks.base import Task

SECONDS_SQL = """
SELECT method, count(*) AS n, median(seconds) AS seconds, median(flops) AS flops, min(device) AS device
FROM rows WHERE error IS NULL AND method IN {methods} GROUP BY method
"""
@dataclass(frozen=True)
class TaskLine:
    task: str
    samples: int
    shards: int
    rows: int


@dataclass(frozen=True)
class CostLine:
    method: str
    samples: int
    seconds: float | None
    """Median seconds per sample on one worker's device, from an earlier run."""
    flops: float | None
    """FLOPs per sample (recorded by the earlier run, or counted on the meta device)."""
    source: str
    hours: float | None
    """Device-hours for this plan (one worker's device; N devices take hours / N of wall time)."""


def task_lines(config: RunConfig, tasks: list[Task]) -> list[TaskLine]:
    shards = plan_shards(tasks, config.shard_size, config.data.limit, config.seed)
    out = []
    for task in tasks:
        mine = [s for s in shards if s.task == task.name]
        samples = sum(len(s.refs) for s in mine)
        out.append(TaskLine(task.name, samples, len(mine), samples * len(config.methods)))
    return out


def _settings(config: dict, method: str) -> str:
    """What must match for an earlier run's seconds to stand for this one's: teacher, precision, and
    the method's own settings."""
    teacher = config.get("teacher", {})
    section = config.get("settings", {}).get(method, {})
    return json.dumps([teacher.get("model"), teacher.get("pretrained"), teacher.get("precision"), section],
                      sort_keys=True, default=list)


def measured(config: RunConfig, runs: list[Path]) -> dict[str, tuple[int, float, float | None, str, str]]:
    """method -> (samples, seconds, flops, device, run dir) from the newest earlier run that matches."""
    wanted = json.loads(json.dumps(config.to_dict(), default=list))
    found: dict[str, tuple] = {}
    manifests = {}
    for run_dir in runs:  # a run that cannot be read tells nothing about cost: skipped
        try:
            manifests[run_dir] = rundir.read_manifest(run_dir)
        except HarnessError:
            continue
    for run_dir in sorted(manifests, key=lambda d: str(manifests[d].get("started") or ""), reverse=True):
        earlier = manifests[run_dir].get("config") or {}
        methods = [m for m in config.methods if m not in found and m in earlier.get("methods", ())
                   and _settings(earlier, m) == _settings(wanted, m)]
        files = [str(p) for p in resultfiles.verify(run_dir, manifests[run_dir].get("fingerprint"), content=False).files] if methods else []
        if not methods or not files:
            continue
        placeholders, params = in_list(methods)
        for r in RowSet.from_files(files).query(SECONDS_SQL.format(methods=placeholders), params).itertuples():
            flops = None if r.flops is None or math.isnan(r.flops) else float(r.flops)
            found[r.method] = (int(r.n), float(r.seconds), flops, str(r.device), str(run_dir))
    return found


def counted_flops(config: RunConfig, tasks: list[Task]) -> dict[tuple[str, str], int]:
    """(method, task) -> FLOPs per sample, counted on the meta device (architecture only, no weights)."""
    from harness.methods import METHODS
    from harness.models.teacher import meta_teacher

    teacher = meta_teacher(config.teacher)
    methods = {name: METHODS.get(name)(config.settings_of(name)) for name in config.methods}
    return {(name, task.name): method.flops(teacher, task) for name, method in methods.items() for task in tasks}


def cost_lines(config: RunConfig, lines: list[TaskLine], tasks: list[Task], runs: list[Path],
               device_tflops: float | None) -> list[CostLine]:
    samples = sum(line.samples for line in lines)
    per_task = {line.task: line.samples for line in lines}
    found = measured(config, runs)
    counted: dict[tuple[str, str], int] | None = None
    failure = ""
    out = []
    for method in config.methods:
        if method in found:
            n, seconds, flops, device, run_dir = found[method]
            out.append(CostLine(method, samples, seconds, flops, f"median of {n} samples in {run_dir} on {device}",
                                samples * seconds / 3600))
            continue
        if counted is None:
            try:
                counted = counted_flops(config, tasks)
            except Exception as exc:  # an architecture the meta device cannot build: say so, plan the rest
                counted = {}
                failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if failure:
            out.append(CostLine(method, samples, None, None, f"no earlier run; FLOPs not counted: {failure}", None))
            continue
        total = sum(counted.get((method, t), 0) * n for t, n in per_task.items())
        hours = total / (device_tflops * 1e12) / 3600 if device_tflops else None
        source = "no earlier run; FLOPs counted on the meta device" + (
            f", at {device_tflops:g} TFLOP/s peak (a lower bound)" if device_tflops else "; give --device-tflops for hours")
        out.append(CostLine(method, samples, None, total / max(samples, 1), source, hours))
    return out


def render(config: RunConfig, lines: list[TaskLine], costs: list[CostLine]) -> str:
    teacher = f"{config.teacher.model}/{config.teacher.pretrained}"
    head = (f"plan (nothing run, nothing written): {len(lines)} task(s), methods {', '.join(config.methods)}, "
            f"teacher {teacher}, shard size {config.shard_size}")
    body = [[line.task, line.samples, line.shards, line.rows] for line in lines]
    body.append(["total", sum(x.samples for x in lines), sum(x.shards for x in lines), sum(x.rows for x in lines)])
    tasks = tabulate(body, headers=["task", "samples", "shards", "rows"], tablefmt="github", intfmt=",")
    cost = tabulate(
        [[c.method, f"{c.samples:,}", "-" if c.seconds is None else f"{c.seconds:.3g}",
          "-" if c.flops is None else f"{c.flops / 1e9:.3g}", "-" if c.hours is None else f"{c.hours:.3g}", c.source]
         for c in costs],
        headers=["method", "samples", "s/sample", "GFLOPs/sample", "device-hours", "from"], tablefmt="github",
        disable_numparse=True)
    return "\n\n".join([head, tasks, cost, "Device-hours are one worker's device; N devices divide the wall time by N."])
