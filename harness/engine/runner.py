"""The driver: resolve tasks, plan shards, start (or join) Ray, feed shards to idle actors, write each
finished shard as it arrives. It knows neither CLIP nor APM: it moves shards and rows."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import store
from harness.config import ExecConfig, RunConfig
from harness.engine.shards import Shard, plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from harness.methods import METHODS
from harness.models.teacher import resolve_source
from harness.provenance import code_version, package_versions
from tasks.base import Task
from tasks.registry import resolve_task

log = logging.getLogger("apm_bench")

IN_FLIGHT_PER_ACTOR = 2
"""Shards queued on each actor, so it starts the next one without waiting for the driver."""


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    samples: int
    rows_written: int
    shards_done: int
    shards_total: int
    errors: int


def prepare(config: RunConfig, execution: ExecConfig | None = None) -> tuple[RunConfig, list[Task]]:
    """Check every name and every task's data before anything starts; pin the task versions.
    Missing data stops the run (all missing tasks named at once) unless --skip-missing."""
    execution = execution or ExecConfig()
    if not config.tasks:
        raise HarnessError("no tasks: give --suite or --task")
    if not config.methods:
        raise HarnessError("no methods: give --suite or --method")
    for name in config.methods:
        METHODS.get(name)
    resolve_source(config.teacher.model, config.teacher.pretrained)
    found: dict[str, Task] = {}
    missing: list[str] = []
    for spec in config.tasks:
        try:
            found[spec] = resolve_task(spec, config.data, execution.data_root, execution.splits_dir)
        except HarnessError as exc:
            if not execution.skip_missing or "unknown task" in str(exc):
                missing.append(str(exc))
            else:
                log.warning("skipping: %s", exc)
    if missing:
        more = f" (and {len(missing) - 1} more task(s) without data; --skip-missing runs the rest)" if len(missing) > 1 else ""
        raise HarnessError(missing[0] + more)
    if not found:
        raise HarnessError("no task has its data; nothing to run")
    tasks = list(found.values())
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise HarnessError(f"two tasks share a name: {names}")
    versions = tuple((spec, task.version) for spec, task in found.items())
    return replace(config, tasks=tuple(found), task_versions=versions), tasks


def new_run_id(config: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.suite or 'run'}-{stamp}-{config.fingerprint()[:8]}"


def open_run_dir(run_dir: Path, config: RunConfig, execution: ExecConfig, shards_total: int) -> dict:
    """A new run writes its manifest; an existing one with the same fingerprint is continued."""
    fingerprint = config.fingerprint()
    if (run_dir / store.MANIFEST).exists():
        manifest = store.read_manifest(run_dir)
        if manifest.get("fingerprint") != fingerprint:
            raise HarnessError(
                f"{run_dir} holds a run with another config (fingerprint {manifest.get('fingerprint')} != "
                f"{fingerprint}); choose another --run-id"
            )
        return manifest
    manifest = {
        "run_id": run_dir.name,
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "execution": {k: v for k, v in execution.__dict__.items() if k != "progress"},
        "versions": package_versions(),
        "code_version": code_version(),
        "started": _now(),
        "finished": None,
        "shards_total": shards_total,
    }
    store.write_manifest(run_dir, manifest)
    return manifest


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def ray_session(execution: ExecConfig) -> Iterator[None]:
    """Join the cluster at --address, reuse one already initialised, or start a local one on 127.0.0.1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not execution.address:
        # read when ray is imported: a local instance then binds every service to the loopback address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for local instances, said explicitly
    import ray

    if ray.is_initialized():
        yield
        return
    if execution.address:
        ray.init(address=execution.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        cpus = max(os.cpu_count() or 1, (execution.workers or 1) * execution.threads_per_worker)
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    try:
        yield
    finally:
        ray.shutdown()


def run(config: RunConfig, execution: ExecConfig) -> RunSummary:
    config, tasks = prepare(config, execution)
    shards = plan_shards(tasks, config.shard_size, config.data.limit, config.seed)
    run_dir = Path(execution.out_root) / (execution.run_id or new_run_id(config))
    is_new = not (run_dir / store.MANIFEST).exists()
    manifest = open_run_dir(run_dir, config, execution, len(shards))
    done = store.done_shards(run_dir)
    todo = [s for s in shards if s.shard_id not in done]
    identity = RunIdentity(run_dir.name, manifest["fingerprint"], manifest["code_version"])
    rows = errors = 0
    if todo:
        try:
            with ray_session(execution):
                rows, errors = _dispatch(config, execution, {t.name: t for t in tasks}, identity, todo, run_dir)
        except BaseException:
            if is_new and not store.done_shards(run_dir):
                shutil.rmtree(run_dir)  # nothing finished: leave no empty run behind to be reported
            raise
    manifest["finished"] = _now()
    store.write_manifest(run_dir, manifest)
    return RunSummary(
        run_dir=run_dir,
        samples=sum(len(s.refs) for s in shards),
        rows_written=rows,
        shards_done=len(store.done_shards(run_dir)),
        shards_total=len(shards),
        errors=errors,
    )


def _dispatch(
    config: RunConfig,
    execution: ExecConfig,
    tasks: dict[str, Task],
    identity: RunIdentity,
    todo: list[Shard],
    run_dir: Path,
) -> tuple[int, int]:
    import ray

    use_gpu = execution.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
    if execution.device == "cuda" and not use_gpu:
        raise HarnessError("--device cuda, but the Ray cluster has no GPU")
    if use_gpu:
        count = int(ray.cluster_resources()["GPU"])
    else:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = execution.workers or max(1, cpus // execution.threads_per_worker)
    count = max(1, min(count, len(todo)))
    actor_cls = ray.remote(ShardWorker).options(
        num_cpus=execution.threads_per_worker, num_gpus=1 if use_gpu else 0
    )
    device = "cuda" if use_gpu else "cpu"
    actors = [actor_cls.remote(config, tasks, identity, device, execution.threads_per_worker) for _ in range(count)]

    queue = list(reversed(todo))
    pending: dict = {}

    def submit(actor) -> None:
        if queue:
            shard = queue.pop()
            pending[actor.process.remote(shard)] = (actor, shard)

    for actor in actors:
        for _ in range(IN_FLIGHT_PER_ACTOR):
            submit(actor)
    rows = errors = 0
    with _progress(execution.progress, sum(len(s.refs) for s in todo), count, device) as (bar, task_id):
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            actor, shard = pending.pop(ref)
            try:
                table = ray.get(ref)  # one shard's rows at a time: the driver never holds the run
            except ray.exceptions.RayError as exc:
                raise worker_failure(exc) from exc
            store.write_shard(run_dir, shard.shard_id, table)
            rows += table.num_rows
            errors += table.num_rows - table.column("error").null_count
            bar.update(task_id, advance=len(shard.refs))
            submit(actor)
    for actor in actors:
        ray.kill(actor)
    return rows, errors


def worker_failure(exc: Exception) -> HarnessError:
    """A worker's exception arrives as Ray's multi-line report; keep the one line that explains it."""
    text = str(exc)
    found = re.findall(r"HarnessError: (.+)", text)
    if found:
        return HarnessError(found[-1].strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return HarnessError(f"a worker failed ({type(exc).__name__}): {lines[-1] if lines else 'no message'}")


@contextlib.contextmanager
def _progress(enabled: bool, total: int, workers: int, device: str) -> Iterator[tuple[Progress, int]]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress, progress.add_task(f"{workers} {device} worker(s)", total=total)
