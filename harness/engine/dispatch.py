"""Feeding shards to Ray actors so that a lost worker costs only its in-flight shards: a dead actor's
shards go back to the queue, Ray restarts the actor (which reloads its teacher), and a shard that
keeps failing is set aside with its reason while the rest of the run completes. A worker that cannot
be made (a broken GPU, memory another process holds) is retired with a note naming its node and GPU
while the others go on; only when every worker fails so is it the run's failure (bad weights, a
missing package), said in one line."""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from harness.engine.placement import place_in, without_place
from harness.engine.shards import Shard
from harness import interrupts
from harness.errors import HarnessError

IN_FLIGHT_PER_ACTOR = 2
"""Shards queued on each actor, so it starts the next one without waiting for the driver."""


@dataclass
class DispatchResult:
    rows: int = 0
    error_rows: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """shard id -> why it was given up on."""
    first_error: str | None = None
    """The first error row's message, to show when every row is one."""
    unplaced: int = 0
    """Workers the cluster never placed (their resources were taken): they ran nothing."""
    capped: str | None = None
    """Why fewer workers ran than --workers asked for, when the cluster could not place them all."""
    retired: list[str] = field(default_factory=list)
    """One line per worker retired while the others went on: where it ran (node, GPU) and why."""


def worker_failure(exc: BaseException) -> HarnessError:
    """A worker's exception arrives as Ray's multi-line report; keep the one line that explains it."""
    text = without_place(str(exc))
    found = re.findall(r"HarnessError: (.+)", text)
    if found:
        return HarnessError(found[-1].strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return HarnessError(f"a worker failed ({type(exc).__name__}): {lines[-1] if lines else 'no message'}")


def _count(result: DispatchResult, table: pa.Table) -> None:
    errors = table.column("error")
    result.rows += table.num_rows
    result.error_rows += table.num_rows - errors.null_count
    if result.first_error is None and errors.null_count < table.num_rows:
        result.first_error = next(e for e in errors.to_pylist() if e is not None)


def _creation_failed(exc: BaseException) -> bool:
    """The actor's __init__ raised (bad weights, a missing package, a broken GPU): restarting cannot help."""
    if getattr(exc, "actor_init_failed", False):
        return True
    text = str(exc)
    return "creation task" in text or "HarnessError" in text


def dispatch(
    actors: Sequence,
    shards: Sequence[Shard],
    write: Callable[[Shard, pa.Table], Sequence[Shard] | None],
    max_attempts: int = 3,
    max_restarts: int = 2,
    recovery_seconds: float = 300.0,
    check: Callable[[Shard, pa.Table], str | None] | None = None,
    placement_seconds: float = 600.0,
    gather_seconds: float = 30.0,
    names: Sequence[str] | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_info: Callable[[dict], None] | None = None,
) -> DispatchResult:
    """Run every shard on some actor; `write` each result as it arrives (the driver holds one
    shard's rows at a time), unless `check` finds it wrong (then it is retried like a failure). What
    `write` returns is queued too (a stream's next part: one part of a stream is in flight at a time).
    Returns counts, the shards given up on and the workers retired.

    An actor gets shards only once a ping shows it placed and loaded: one the cluster cannot place
    (its GPU or CPUs are taken) never holds shards the others could run; if none is placed within
    `placement_seconds` the run stops with one line. `on_ready` is called with the first actor that
    loads, before any shard is handed out. Shards are handed out once every actor is ready,
    or `gather_seconds` after the first is, so a small run is spread over all workers rather than
    taken whole by the one that loaded first. A worker that dies is sent nothing until a ping
    shows Ray has restarted it (its shards go to the others meanwhile); one that died more than
    `max_restarts` times, does not come back within `recovery_seconds`, or fails to load again, is
    retired. `names` say where each actor was asked to run, until its own info() tells its place.
    `on_info` sees every worker's info() as it loads or comes back (its device and software), and may
    stop the run by raising.

    A worker that fails to load is retired with a note while another lives or has loaded. Until one
    has, the notes wait: when every worker fails to load, that is the run's own failure (bad weights,
    a missing package), and the run stops with the first one's line, as when every worker is retired."""
    import ray

    queue: deque[Shard] = deque(shards)
    attempts: Counter[str] = Counter()
    deaths: Counter[int] = Counter()
    pending: dict = {}  # ref -> (actor index, shard, or None for a ping)
    load: Counter[int] = Counter()
    started = time.monotonic()
    placing: set[int] = set(range(len(actors)))  # not yet shown placed
    first_ready: float | None = None
    recovering: dict[int, float] = {}  # actor index -> when it died
    retired: set[int] = set()
    places = list(names) if names else [f"worker {i + 1}" for i in range(len(actors))]
    held: list[str] = []  # workers that failed to load before any other loaded: notes, or the run's failure
    first_failure: HarnessError | None = None
    result = DispatchResult()

    def gathered() -> bool:
        return not placing or (first_ready is not None and time.monotonic() - first_ready > gather_seconds)

    def feed(i: int) -> None:
        if not gathered():
            return
        while i not in retired and i not in recovering and i not in placing and load[i] < IN_FLIGHT_PER_ACTOR and queue:
            shard = queue.popleft()
            actors[i].prefetch.remote(shard)
            pending[actors[i].process.remote(shard)] = (i, shard)
            load[i] += 1

    def retry(shard: Shard, reason: str) -> None:
        attempts[shard.shard_id] += 1
        if attempts[shard.shard_id] >= max_attempts:
            result.failed[shard.shard_id] = f"{reason} (after {attempts[shard.shard_id]} attempts)"
        else:
            queue.appendleft(shard)

    def retire(i: int, why: str, place: str | None = None) -> None:
        retired.add(i)
        placing.discard(i)
        recovering.pop(i, None)
        (held if first_ready is None else result.retired).append(f"retired the worker on {place or places[i]}: {why}")

    def failed_to_load(i: int, exc: BaseException) -> None:
        nonlocal first_failure
        if i in retired:
            return
        failure = worker_failure(exc)
        first_failure = first_failure or failure
        retire(i, str(failure), place_in(str(exc)))

    def lost(i: int) -> None:
        if i in recovering or i in retired:
            return
        deaths[i] += 1
        if deaths[i] > max_restarts:
            retire(i, f"it died {deaths[i]} times")
            return
        recovering[i] = time.monotonic()
        pending[actors[i].info.remote()] = (i, None)

    def none_left() -> HarnessError:
        return first_failure or HarnessError(
            f"every worker died; {len(queue)} shard(s) not run (finished shards are kept)")

    for i in range(len(actors)):
        pending[actors[i].info.remote()] = (i, None)
    while queue or any(shard is not None for _, shard in pending.values()):
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        interrupts.check()  # a Ctrl-C whose exception was swallowed still stops the run within a second
        if not ready:
            for j in range(len(actors)):  # the gathering time may have run out
                feed(j)
            working = set(range(len(actors))) - retired - placing
            if queue and not working and (not placing or time.monotonic() - started > placement_seconds):
                if placing and first_failure is None:
                    raise HarnessError(f"no worker was placed on the cluster within {placement_seconds:.0f} s "
                                       f"({len(placing)} waiting for resources); finished shards are kept")
                raise none_left()
            continue
        ref = ready[0]
        i, shard = pending.pop(ref)
        if shard is None:  # a ping: the actor is placed (first time), or restarted
            try:
                info = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if _creation_failed(exc):
                    failed_to_load(i, exc)
                elif i not in retired:
                    placing.discard(i)
                    if i not in recovering:
                        recovering[i] = time.monotonic()
                    if time.monotonic() - recovering[i] > recovery_seconds:
                        retire(i, f"it did not come back within {recovery_seconds:.0f} s of dying")
                    else:
                        time.sleep(0.5)
                        pending[actors[i].info.remote()] = (i, None)
            else:
                if isinstance(info, dict) and info.get("place"):
                    places[i] = info["place"]
                if on_info is not None and isinstance(info, dict):
                    on_info(info)  # may stop the run (a resume on another device model)
                placing.discard(i)
                recovering.pop(i, None)
                if first_ready is None:
                    first_ready = time.monotonic()
                    result.retired += held  # another worker loaded: theirs were not the run's failure
                    held.clear()
                    if on_ready is not None:
                        on_ready(i)
        else:
            load[i] -= 1
            try:
                table = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if _creation_failed(exc):  # restarted, it could not load again (its GPU is still broken)
                    failed_to_load(i, exc)
                else:
                    lost(i)
                retry(shard, "its worker died")
            except ray.exceptions.RayTaskError as exc:
                retry(shard, str(worker_failure(exc)))
            else:
                wrong = check(shard, table) if check is not None else None
                if wrong:
                    retry(shard, wrong)
                else:
                    queue.extend(write(shard, table) or ())  # a stream's next part, once this one is written
                    _count(result, table)
        for j in range(len(actors)):  # a re-queued shard may go to any actor with room
            feed(j)
        if queue and not (set(range(len(actors))) - retired):
            raise none_left()
    for i in sorted(recovering):  # died, and the run ended before Ray had it back (or found it cannot)
        retire(i, "it died and was not back when the run ended")
    result.unplaced = len(placing)
    return result
