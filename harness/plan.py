"""`apm-bench plan` (run --dry-run): what a run would do and what it would cost, before it starts.

Per task: samples, shards, rows; a task whose data is not here is counted from the published size of
its test set (tasks/planned.py), and the plan says so, so a suite can be priced before it is fetched.
Per method: device-hours, from the median seconds per sample of the newest earlier run with the same
teacher and the same method settings, or else from FLOPs per sample (counted on a model built on
torch's meta device: no weights, no memory; kept in a cache, harness/flop_cache.py) and a stated device
peak. The weights of the teacher and of a method's own models (RLCF's reward model) are looked for,
not fetched. Nothing is loaded beyond what listing the tasks needs, and nothing is written but the
FLOP cache."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness import flop_cache, rundir
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.engine.shards import plan_shards
from harness.models.sources import resolve_source, weights_status
from tasks.base import Task
from tasks.planned import PlannedTask

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
    planned: PlannedTask | None = None
    """Set when the data is not here and the counts come from the test set's published size."""


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
    shards = plan_shards([t for t in tasks if not isinstance(t, PlannedTask)], config.shard_size, config.data.limit,
                         config.sample_seed)
    out = []
    for task in tasks:
        if isinstance(task, PlannedTask):  # shards are cut from the task's order: only the count is needed
            samples = task.planned_samples(config.data.limit)
            out.append(TaskLine(task.name, samples, math.ceil(samples / config.shard_size), samples * _rows(config), task))
            continue
        mine = [s for s in shards if s.task == task.name]
        samples = sum(len(s.refs) for s in mine)
        out.append(TaskLine(task.name, samples, len(mine), samples * _rows(config)))
    return out


def _rows(config: RunConfig) -> int:
    """Rows per sample: one per episodic method, one per online method and stream."""
    return len(config.episodic) + len(config.online) * config.streams


def _settings(config: dict, method: str) -> str:
    """What must match for an earlier run's seconds to stand for this one's: teacher, precision, and
    the method's own settings."""
    teacher = config.get("teacher", {})
    section = config.get("settings", {}).get(method, {})
    return json.dumps([teacher.get("model"), teacher.get("pretrained"), teacher.get("precision"), section],
                      sort_keys=True, default=list)


def measured(config: RunConfig, runs: list[Path]) -> dict[str, tuple[int, float, float | None, str, str]]:
    """method -> (samples, seconds, flops, device, run dir) from the newest earlier run that matches."""
    if not runs:
        return {}
    from harness import resultfiles  # pandas, pyarrow and DuckDB: only when there are earlier runs to read
    from harness.report.rowset import RowSet, in_list

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


def counted_flops(config: RunConfig, tasks: list[Task], lengths: dict[str, int]) -> dict[tuple[str, str], int]:
    """(method, task) -> FLOPs per sample, counted on the meta device (architecture only, no weights);
    an online method's over a stream of the task's `lengths` samples (a growing state costs more late)."""
    from harness.methods import METHODS
    from harness.models.teacher import meta_teacher

    teacher = meta_teacher(config.teacher)
    out = {}
    for name in config.methods:
        method = METHODS.get(name)(config.settings_of(name))
        for task in tasks:
            online = name in config.online
            out[(name, task.name)] = method.flops(teacher, task, lengths.get(task.name, 1)) if online else \
                method.flops(teacher, task)
    return out


def cost_lines(config: RunConfig, lines: list[TaskLine], tasks: list[Task], runs: list[Path],
               device_tflops: float | None) -> list[CostLine]:
    per_task = {line.task: line.samples for line in lines}
    found = measured(config, runs)
    counted: dict[tuple[str, str], int] | None = None
    failure, cached = "", False
    out = []
    for method in config.methods:
        samples = sum(per_task.values()) * (config.streams if method in config.online else 1)
        if method in found:
            n, seconds, flops, device, run_dir = found[method]
            out.append(CostLine(method, samples, seconds, flops, f"median of {n} samples in {run_dir} on {device}",
                                samples * seconds / 3600))
            continue
        if counted is None:
            try:
                counted, fresh = flop_cache.counts(config, tasks, lambda todo: counted_flops(config, todo, per_task))
                cached = not fresh
            except Exception as exc:  # an architecture the meta device cannot build: say so, plan the rest
                counted = {}
                failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if failure:
            out.append(CostLine(method, samples, None, None, f"no earlier run; FLOPs not counted: {failure}", None))
            continue
        streams = config.streams if method in config.online else 1
        total = sum(counted.get((method, t), 0) * n for t, n in per_task.items()) * streams
        hours = total / (device_tflops * 1e12) / 3600 if device_tflops else None
        source = "no earlier run; FLOPs counted on the meta device" + (" (cached)" if cached else "") + (
            f", at {device_tflops:g} TFLOP/s peak (a lower bound)" if device_tflops else "; give --device-tflops for hours")
        out.append(CostLine(method, samples, None, total / max(samples, 1), source, hours))
    return out


def weight_lines(config: RunConfig) -> list[tuple[bool, str]]:
    """(whether a run would find them, one line) for the teacher's weights and each method's own
    models' (RLCF's reward model): looked for in the cache, the hub asked whether it answers, nothing
    fetched. Names that cannot resolve are the check's problems, not repeated here."""
    wanted = [("the teacher", config.teacher.model, config.teacher.pretrained, "")]
    for name, settings in config.settings:
        extra = getattr(settings, "extra_teachers", lambda: ())()
        hint = getattr(settings, "EXTRA_TEACHER_HINT", "")
        wanted += [(f"{name}'s own model", m, p, hint) for m, p, _ in extra]
    out = []
    for who, model, pretrained, hint in wanted:
        try:
            ok, text = weights_status(resolve_source(model, pretrained))
        except HarnessError:
            continue
        out.append((ok, f"weights of {who} {model}/{pretrained}: {text}" + (f" ({hint})" if hint and not ok else "")))
    return out


def render(config: RunConfig, lines: list[TaskLine], costs: list[CostLine],
           weights: Sequence[tuple[bool, str]] = ()) -> str:
    teacher = f"{config.teacher.model}/{config.teacher.pretrained}"
    head = (f"plan (nothing run, nothing written): {len(lines)} task(s), methods {', '.join(config.methods)}, "
            f"teacher {teacher}, shard size {config.shard_size}")
    body = [[line.task, line.samples, line.shards, line.rows, "known size" if line.planned else "data"]
            for line in lines]
    body.append(["total", sum(x.samples for x in lines), sum(x.shards for x in lines), sum(x.rows for x in lines), ""])
    tasks = tabulate(body, headers=["task", "samples", "shards", "rows", "counted from"], tablefmt="github",
                     intfmt=",")
    cost = tabulate(
        [[c.method, f"{c.samples:,}", "-" if c.seconds is None else f"{c.seconds:.3g}",
          "-" if c.flops is None else f"{c.flops / 1e9:.3g}", "-" if c.hours is None else f"{c.hours:.3g}", c.source]
         for c in costs],
        headers=["method", "samples", "s/sample", "GFLOPs/sample", "device-hours", "from"], tablefmt="github",
        disable_numparse=True)
    notes = [f"{line.task}: counted from the published size of its test set, {line.planned.size.samples:,} "
             f"({line.planned.size.source}), since {_why_missing(line.planned)}" for line in lines if line.planned]
    notes += [text for _, text in weights]
    parts = [head, tasks, cost, "Device-hours are one worker's device; N devices divide the wall time by N."]
    return "\n\n".join(parts + (["\n".join(f"note: {n}" for n in notes)] if notes else []))


def _why_missing(task: PlannedTask) -> str:
    """The data lookup's message without its `task NAME: ` prefix (the note names the task already)."""
    text = task.missing.removeprefix(f"task {task.name}: ")
    return text if text else "its data is not here"
