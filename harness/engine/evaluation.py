"""A shard's samples through every method of the run, with each method's cost and failures kept to
that method: batch methods (zero-shot, APM, plugins) one after another, view methods sample by sample
from one feed, so each sample's views are made once for all of them, ahead on the data threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from harness.device import PeakMemory, is_device_error, is_out_of_memory
from harness.methods.base import Method, Outcome, SampleInput
from harness.methods.episodic import ShardStart, ViewMethod
from harness.methods.view_feed import ViewFeed, lookahead
from harness.models.teacher import Teacher
from tasks.base import Task

T = TypeVar("T")


@dataclass
class MethodRun:
    """One method's outcomes for a shard's samples, in order, and its peak memory."""

    outcomes: list[Outcome] = field(default_factory=list)
    peak: int | None = None
    """Bytes above what was allocated when its work started, the highest over its pieces of work (the
    whole shard for a batch method, each sample for a view method); None off CUDA."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def attempt(work: Callable[[], T]) -> T | str:
    """`work()`, or the one-line message of what it raised: a method's failure is its own rows' error.
    A sticky device error is raised on (the device failed, not the method: the worker restarts)."""
    try:
        return work()
    except Exception as exc:
        if is_device_error(exc) and not is_out_of_memory(exc):
            raise
        return one_line(exc)


def shares_views(method: Method) -> bool:
    """A view method that keeps ViewMethod's own sample loop; one that replaces `evaluate` runs alone."""
    return isinstance(method, ViewMethod) and type(method).evaluate is ViewMethod.evaluate


def evaluate_shard(
    methods: Sequence[Method], teacher: Teacher, task: Task, inputs: Sequence[SampleInput], memory: PeakMemory,
    pool: Executor | None = None, data_threads: int = 1,
) -> dict[str, MethodRun]:
    """Every method's run on `inputs`. Seconds, FLOPs and peak memory stay per method: each method's
    work is measured on its own, whichever order the work is interleaved in."""
    runs: dict[str, MethodRun] = {}
    viewers = [m for m in methods if shares_views(m)]
    for method in methods:
        if not shares_views(method):
            runs[method.name] = _batch(method, teacher, task, inputs, memory)
    runs.update(_views(viewers, teacher, task, inputs, memory, pool, data_threads))
    return runs


def _batch(method: Method, teacher: Teacher, task: Task, inputs: Sequence[SampleInput], memory: PeakMemory) -> MethodRun:
    memory.start()
    got = attempt(lambda: method.evaluate(teacher, task, inputs))
    peak = memory.rise()
    if isinstance(got, str):
        return MethodRun([Outcome(None, error=got) for _ in inputs], peak)
    return MethodRun(list(got), peak)


def _views(methods: Sequence[ViewMethod], teacher: Teacher, task: Task, inputs: Sequence[SampleInput],
           memory: PeakMemory, pool: Executor | None, data_threads: int) -> dict[str, MethodRun]:
    """The view methods sample by sample: for each sample, each method in the run's order. The feed
    makes the views of the next samples meanwhile: lookahead(data_threads, ...) samples, every
    distinct spec, at most VIEW_MEMORY bytes of them. A method that fails on a sample gets an error
    row for that sample and goes on with the next; one that fails before its first sample (its
    classifier, its FLOPs) gets error rows for all."""
    runs = {m.name: MethodRun() for m in methods}
    starts: dict[str, ShardStart] = {}
    for method in methods:
        memory.start()
        got = attempt(lambda: method.begin(teacher, task, inputs))
        runs[method.name].peak = memory.rise()
        if isinstance(got, str):
            runs[method.name].outcomes = [Outcome(None, error=got) for _ in inputs]
        else:
            starts[method.name] = got
    specs = list(dict.fromkeys(start.spec for start in starts.values()))
    feed = ViewFeed(inputs, specs, pool, lookahead(data_threads, sum(spec.nbytes for spec in specs)),
                    pin=teacher.device.type == "cuda")
    active = [m for m in methods if m.name in starts]
    for index in range(len(inputs)):
        for method in active:
            start, run = starts[method.name], runs[method.name]
            memory.start()
            got = attempt(lambda: method.run_sample(teacher, task, start, feed, index))
            run.peak = _higher(run.peak, memory.rise())
            run.outcomes.append(Outcome(None, prediction_before=start.before[index], error=got)
                                if isinstance(got, str) else got)
    return runs


def _higher(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
