"""Each sample's augmented views, made once for all the view methods of a run that ask for the same
ones, and made ahead of the compute thread on the worker's data threads, so the device does not wait
for its CPU and no view is made twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import torch

from harness.methods.base import SampleInput
from harness.methods.tpt_views import make_augmented_views

VIEW_MEMORY = 1 << 30
"""Host memory the views made ahead may take: 64 views of a 224 px teacher are 38.5 MB a sample."""


@dataclass(frozen=True)
class ViewSpec:
    """What a sample's views depend on besides the sample (its image and its seed): methods whose
    specs are equal are given the same tensor."""

    count: int
    """Augmented views (a method's `views` - 1: view 0 is the teacher's own preprocessing)."""
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmix: bool
    min_scale: float

    def make(self, sample: SampleInput) -> torch.Tensor:
        return make_augmented_views(sample.image, self.count, self.size, self.mean, self.std, sample.seed,
                                    self.augmix, self.min_scale)

    @property
    def nbytes(self) -> int:
        return 4 * self.count * 3 * self.size * self.size


def lookahead(data_threads: int, per_sample: int) -> int:
    """Samples whose views may be made or held at once: two per data thread plus two (so each thread
    finds its next sample queued when it finishes one; 4 with one thread), but no more than
    VIEW_MEMORY holds at `per_sample` bytes a sample, and at least the sample being computed."""
    return max(1, min(2 * data_threads + 2, VIEW_MEMORY // max(per_sample, 1)))


class ViewFeed:
    """Views of samples[0], samples[1], ... asked for in that order. Asking for sample i lets go of
    every earlier sample's views and queues those of samples i .. i + ahead - 1, every spec, on the
    pool: the feed holds at most `ahead` samples' views, `ahead` x (sum of the specs' nbytes) bytes.
    Without a pool a sample's views are made on the calling thread when first asked for.

    `pin`: views are made in page-locked memory on the thread that makes them, so the compute thread's
    copy to the GPU does not block (CUDA only; a CPU worker keeps ordinary memory)."""

    def __init__(self, samples: Sequence[SampleInput], specs: Iterable[ViewSpec], pool: Executor | None = None,
                 ahead: int = 1, pin: bool = False) -> None:
        self.samples = samples
        self.specs = tuple(dict.fromkeys(specs))
        self.pool = pool
        self.ahead = max(1, ahead)
        self.pin = pin
        self._made: dict[tuple[int, ViewSpec], Future | torch.Tensor] = {}
        self._queued = 0
        self._current = 0

    def views(self, index: int, spec: ViewSpec) -> torch.Tensor:
        """(spec.count, 3, size, size) views of samples[index]; a spec the feed was not made with is
        made here, on the calling thread."""
        if index < self._current:
            raise ValueError(f"views of sample {index} were let go: the feed moves forward only (at {self._current})")
        self._advance(index)
        made = self._made.get((index, spec))
        if made is None:
            made = self._made[(index, spec)] = self._make(index, spec)
        return made.result() if isinstance(made, Future) else made

    def _advance(self, index: int) -> None:
        if index > self._current:
            self._made = {key: value for key, value in self._made.items() if key[0] >= index}
            self._current = index
        if self.pool is None:
            return
        self._queued = max(self._queued, index)
        while self._queued < min(len(self.samples), index + self.ahead):
            for spec in self.specs:
                self._made[(self._queued, spec)] = self.pool.submit(self._make, self._queued, spec)
            self._queued += 1

    def _make(self, index: int, spec: ViewSpec) -> torch.Tensor:
        views = spec.make(self.samples[index])
        return views.pin_memory() if self.pin else views
