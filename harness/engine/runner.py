"""The driver: resolve tasks, plan shards, start (or join) Ray, feed shards to idle actors, write each
finished shard as it arrives. It knows neither CLIP nor APM: it moves shards and rows."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import interrupts, resultfiles, rundir
from harness.config import ExecConfig, RunConfig
from harness.engine.cluster import ray_session
from harness.engine.environments import Environments
from harness.engine.dispatch import DispatchResult, dispatch
from harness.engine.placement import actor_options, cluster_nodes, placed
from harness.engine.pool import PoolPlan, device_type, plan_pool
from harness.engine.shards import Shard, plan_shards
from harness.engine.work import Compactor, Work, stream_parts
from harness.engine.stream_parts import (PartResult, Stream, StreamPart, drop_older_states, finish_stream,
                                         part, plan_streams, rows_id, write_state)
from harness.engine.worker import RunIdentity, ShardWorker
from harness.engine.prepare import pin_weights, prepare
from harness.errors import HarnessError, Interrupted, StorageError
from harness.provenance import code_version, package_versions
from tasks.base import Task

log = logging.getLogger("apm_bench")


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    samples: int
    rows_written: int
    shards_done: int
    shards_total: int
    errors: int
    failed: dict[str, str]
    """Shards given up on after repeated failures (shard id -> reason); a resume retries them."""
    first_error: str | None = None
    """The first error row's message in this session."""
    unplaced: int = 0
    """Workers the cluster never placed (their GPUs or CPUs were taken); the others ran everything."""
    repaired: tuple[str, ...] = ()
    """Result files that failed verification at the start (set aside in quarantine/), each with why."""
    rerun: int = 0
    """Shards that only those files held, run again and finished in this session."""
    capped: str | None = None
    """Why fewer workers ran than --workers asked for (the cluster could place no more)."""
    retired: tuple[str, ...] = ()
    """Workers retired while the others went on (a GPU that broke), each with its node, GPU and why."""
    units: str = "shards"
    """What shards_done and shards_total count: shards, streams, or both (online methods' streams)."""


def config_differences(then: dict, now: dict, prefix: str = "") -> list[str]:
    """The dotted names whose values differ between two configs as JSON holds them (settings.tpt.steps, ...)."""
    out = []
    for key in sorted(set(then) | set(now)):
        a, b = then.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{prefix}{key} ({json.dumps(a, default=str)} there, {json.dumps(b, default=str)} now)")
    return out


def new_run_id(config: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.suite or 'run'}-{stamp}-{config.fingerprint()[:8]}"


LAYOUT = 2
"""How a run directory names its shards (2: each task's shard ids carry a hash of the task's name)."""


def open_run_dir(out_root: Path, run_id: str | None, config: RunConfig, execution: ExecConfig, shards_total: int,
                 samples_total: int | None = None, streams_total: int = 0) -> tuple[Path, dict, rundir.Claim | None]:
    """The run's directory, its manifest, and the claim on it if this process created it (only then
    may a failure remove it). An existing run with the same fingerprint is continued; one with another
    config is refused, or left alone for a fresh directory with --force-new; an existing folder that is
    not a run is never written into."""
    fingerprint = config.fingerprint()
    claim, target = None, None
    if run_id is not None:
        target = rundir.run_path(out_root, run_id)
        claim = rundir.claim_new(target)
        manifest = _existing_run(target) if claim is None else None
        if manifest is not None:
            if manifest.get("fingerprint") == fingerprint:
                if manifest.get("layout") != LAYOUT:
                    raise HarnessError(
                        f"{target} was made by an earlier apm-bench ({manifest.get('code_version', '?')}), whose shard "
                        "names this one does not continue; finish it with that version, or start a new run")
                return target, manifest, None
            if not execution.force_new:
                raise HarnessError(_another_config(target, manifest, config))
            target = None
    if target is None:
        claim = rundir.claim_fresh(out_root, new_run_id(config))
        target = claim.path
    manifest = {
        "run_id": target.name,
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "execution": {k: v for k, v in dataclasses.asdict(execution).items() if k != "progress"},
        "versions": package_versions(),
        "code_version": code_version(),
        "started": _now(),
        "finished": None,
        "failed_shards": {},
        "shards_total": shards_total,
        "samples_total": samples_total,
        "streams_total": streams_total,
        "layout": LAYOUT,
    }
    rundir.write_manifest(target, manifest)
    return target, manifest, claim


def _existing_run(run_dir: Path) -> dict | None:
    """The manifest of the run at `run_dir`, which exists; None for an empty folder (used, never
    removed: this process did not make it); any other folder that is not a run is refused."""
    rundir.check_layout(run_dir)
    if run_dir.is_dir() and not (run_dir / rundir.MANIFEST).exists():
        if not any(run_dir.iterdir()):
            return None
        raise HarnessError(f"{run_dir} exists and is not a run directory (no {rundir.MANIFEST}); "
                           "choose another --run-id or --out-root: a run never writes into another folder")
    return rundir.read_manifest(run_dir)


def _another_config(run_dir: Path, manifest: dict, config: RunConfig) -> str:
    then = (manifest.get("config") or {}).get("teacher", {}).get("weights_sha256")
    if then != config.teacher.weights_sha256:
        why = f": its teacher weights differ (sha256 {str(then)[:12]}... there, {str(config.teacher.weights_sha256)[:12]}... now)"
    else:
        changed = config_differences(manifest.get("config") or {}, config.to_dict())
        why = f": {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''} differ" if changed else ""
    return (f"{run_dir} holds a run with another config (fingerprint {manifest.get('fingerprint')}, "
            f"requested {config.fingerprint()}){why}; resume it with --resume {run_dir}, or pass --force-new for a new run")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run(config: RunConfig, execution: ExecConfig, tasks: list[Task] | None = None) -> RunSummary:
    """Run `config`. `tasks`, when given, are its tasks as `prepare.check` resolved them (the CLI
    checks first, to report every problem before anything heavy is imported)."""
    if tasks is None:
        config, tasks = prepare(config, execution)
    else:
        config = pin_weights(config)
    if config.feature_cache and not execution.feature_cache_dir:
        raise HarnessError("this run reads the teacher's features from a cache: give --feature-cache DIR")
    shards = plan_shards(tasks, config.shard_size, config.data.limit, config.sample_seed) if config.episodic else []
    streams = plan_streams(config, tasks) if config.online else []
    summary: RunSummary | None = None
    try:
        with contextlib.ExitStack() as cluster:  # Ray, once started here, stays up for the whole run
            config = _with_device(config, execution, cluster)
            summary = _run(config, execution, tasks, Work(shards, streams), cluster)
    except KeyboardInterrupt:
        if summary is None:
            raise
        # a signal while Ray shut down, after the run wrote every file and its manifest: the run is whole,
        # and saying "nothing was written" (the CLI's word for an interrupt outside a run) would be false
    return summary


def _with_device(config: RunConfig, execution: ExecConfig, cluster: contextlib.ExitStack) -> RunConfig:
    """The config with where its networks run: --device, or for `auto` what the cluster has (Ray
    starts here then). A resumed run keeps the device it was made on: another would change results."""
    requested = execution.device
    if config.device_type is not None:
        if requested not in ("auto", config.device_type):
            raise HarnessError(f"this run was made on {config.device_type}; --device {requested} would change its "
                               "results (start a new run for another device)")
        return config
    if requested == "cpu":
        return replace(config, device_type="cpu")
    cluster.enter_context(ray_session(execution))
    import ray

    return replace(config, device_type=device_type(requested, ray.cluster_resources().get("GPU", 0)))


def _run(config: RunConfig, execution: ExecConfig, tasks: list[Task], work: Work,
         cluster: contextlib.ExitStack) -> RunSummary:
    run_dir, claim, verdict = None, None, None
    result = DispatchResult()
    shards = work.shards
    try:  # from the first file written: a signal at any moment leaves a new run either with shards or gone
        with _storage(Path(execution.out_root), 0, nothing_yet=True), interrupts.deferred():
            run_dir, manifest, claim = open_run_dir(Path(execution.out_root), execution.run_id, config, execution,
                                                    work.units, work.samples, len(work.streams))
        verdict = resultfiles.verify(run_dir, manifest["fingerprint"])  # every file a resume would skip, checked
        resultfiles.quarantine(run_dir, verdict.bad)
        resultfiles.tidy(run_dir, verdict)
        todo: list[Shard | StreamPart] = [s for s in shards if s.shard_id not in verdict.shards]
        identity = RunIdentity(run_dir.name, manifest["fingerprint"], code_version())
        todo += stream_parts(run_dir, config, execution, work.streams, verdict.shards, identity.fingerprint)
        compactor = Compactor(run_dir, shards, identity.fingerprint, verdict.files)
        if todo:
            interrupts.check()
            cluster.enter_context(ray_session(execution))
            environments = Environments(run_dir, manifest, execution.allow_other_device)
            result = _dispatch(config, execution, {t.name: t for t in tasks}, identity, todo, run_dir, compactor,
                               environments, {s.key: s for s in work.streams})
        with _storage(run_dir, work.units):
            compactor.flush()
            manifest["failed_shards"] = result.failed
            manifest["finished"] = None if result.failed else _now()
            rundir.write_manifest(run_dir, manifest)
    except BaseException as exc:
        finished = work.done(run_dir) if run_dir is not None else 0
        if claim is not None and not finished:
            rundir.release(claim)  # nothing finished: leave no empty run behind to be reported
        if not isinstance(exc, KeyboardInterrupt):
            raise
        if not finished:
            raise Interrupted("interrupted before any shard finished; nothing was kept") from None
        raise Interrupted(
            f"interrupted: {finished}/{work.units} {work.kind} finished and kept in {run_dir}; "
            f"finish the rest with: apm-bench run --resume {run_dir}"
        ) from None
    return RunSummary(
        run_dir=run_dir,
        samples=work.samples,
        rows_written=result.rows,
        shards_done=work.done(run_dir),
        shards_total=work.units,
        errors=result.error_rows,
        failed=dict(result.failed),
        first_error=result.first_error,
        unplaced=result.unplaced,
        repaired=tuple(f"{path.relative_to(run_dir)}: {reason}" for path, reason in verdict.bad),
        rerun=len(verdict.lost & resultfiles.done_shards(run_dir)),
        capped=result.capped,
        retired=tuple(result.retired),
        units=work.kind,
    )


@contextlib.contextmanager
def _storage(run_dir: Path, total: int, nothing_yet: bool = False) -> Iterator[None]:
    """An OSError while writing results (a full disk, a lost mount) becomes one line: what could not be
    written, what is kept, and how to go on. The writes themselves leave no temporary file."""
    try:
        yield
    except OSError as exc:
        what = exc.filename or run_dir
        cause = exc.strerror or str(exc)
        if nothing_yet:
            raise StorageError(f"cannot write {what}: {cause}; nothing was written") from None
        done = len(resultfiles.done_shards(run_dir))
        fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        raise StorageError(f"cannot write {what}: {cause}; the {done}/{total} finished shards are kept; "
                           f"{fix}, then finish with: apm-bench run --resume {run_dir}") from None


def _dispatch(
    config: RunConfig,
    execution: ExecConfig,
    tasks: dict[str, Task],
    identity: RunIdentity,
    todo: list[Shard | StreamPart],
    run_dir: Path,
    compactor: Compactor,
    environments: Environments,
    streams: dict[str, Stream],
) -> DispatchResult:
    import ray

    before = ray.available_resources()
    pool = plan_pool(config.device_type or "cpu", cluster_nodes(), len(todo), execution.workers,
                     execution.threads_per_worker, execution.cpus_per_worker)
    # an `io` concurrency group lets an actor decode its next shard while it computes this one; the
    # subclass keeps ray out of worker.py, which must not import it before ray_session sets its env
    prefetching = type("ShardActor", (placed(ShardWorker),),
                       {"prefetch": ray.method(concurrency_group="io")(ShardWorker.prefetch)})
    actor_cls = ray.remote(concurrency_groups={"io": 1})(prefetching)
    actors, names = [], []
    for share in pool.shares:  # each node's workers sized from its own CPUs, and pinned there
        sized = actor_cls.options(**actor_options(share, pool.gpus), max_restarts=execution.max_restarts,
                                  max_task_retries=0)  # a restarted actor reloads its teacher; we re-queue
        for _ in range(share.workers):
            names.append(share.name or f"worker {len(actors) + 1}")
            actors.append(sized.remote(config, tasks, identity, pool.device, execution.threads_per_worker,
                                       pool.data_threads(share), execution.feature_cache_dir))

    def share_classifiers(first: int) -> None:
        """Text classifiers are built once, by the first worker placed and loaded, and shipped to the
        others via the object store; each actor runs calls in order, so the others adopt them before
        their first shard (dispatch hands out none before this returns)."""
        classifiers = actors[first].text_classifiers.remote()
        for k, actor in enumerate(actors):
            if k != first:
                actor.adopt_classifiers.remote(classifiers)

    def write(work: Shard | StreamPart, table) -> list[StreamPart]:
        """A shard's rows; a part's state, then its rows, and the stream's next part (if any) to queue."""
        if isinstance(work, Shard):
            resultfiles.write_shard(run_dir, work.shard_id, table, identity.fingerprint)
            compactor.finished(work)
            bar.update(task_id, advance=len(work.refs))
            return []
        write_state(run_dir, work.stream, table.end, table.state)
        resultfiles.write_shard(run_dir, rows_id(work.stream, table.start, table.end), table.table, identity.fingerprint)
        drop_older_states(run_dir, work.stream, table.end)
        bar.update(task_id, advance=table.end - table.start)
        stream = streams[work.stream]
        if table.end < len(stream.items):
            return [part(config, stream, table.end, table.state, execution.checkpoint_seconds)]
        finish_stream(run_dir, stream, identity.fingerprint)
        return []

    def wrong(work: Shard | StreamPart, table) -> str | None:
        """A shard's table must hold every (sample, method) once, from this run; a part's, every sample
        it reached for every online method."""
        if isinstance(work, StreamPart):
            if not isinstance(table, PartResult) or not work.start < table.end <= work.start + len(work.items):
                return "the worker returned no progress on its stream"
            expected = (table.end - table.start) * len(config.online)
        else:
            expected = len(work.refs) * len(config.episodic)
        if table.num_rows != expected:
            return f"the worker returned {table.num_rows} rows, not {expected}"
        fingerprints = set(table.column("fingerprint").to_pylist())
        return None if fingerprints <= {identity.fingerprint} else f"rows of another run ({fingerprints})"

    total = len(resultfiles.done_shards(run_dir)) + len(todo)
    try:
        remaining = sum(len(w.refs) if isinstance(w, Shard) else w.length - w.start for w in todo)
        with _storage(run_dir, total), _progress(execution.progress, remaining, pool) as (bar, task_id):
            result = dispatch(actors, todo, write, execution.max_attempts, execution.max_restarts, check=wrong,
                              placement_seconds=execution.placement_timeout, names=names, on_ready=share_classifiers,
                              on_info=environments.seen)
            result.capped = pool.capped(execution.workers)
            return result
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        _await_release(before)


def _await_release(before: dict[str, float], seconds: float = 10.0) -> None:
    """Wait (briefly) until the killed actors' CPUs and GPUs are free again: Ray frees them when the
    processes are gone, and a next run in the same session sizes its pool by what is free."""
    import ray

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        free = ray.available_resources()
        if all(free.get(k, 0.0) >= v for k, v in before.items() if k in ("CPU", "GPU")):
            return
        time.sleep(0.1)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, pool: PoolPlan) -> Iterator[tuple[Progress, int]]:
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
        yield progress, progress.add_task(pool.describe(), total=total)
