"""APM's per-sample initial weights, drawn where the compute thread does not wait for them.

Every parameter comes from N(0, init_std) on a CPU generator seeded by the sample's seed, in the
network's parameter order: a CUDA generator draws another stream from the same seed, so drawing on
the CPU (and copying) makes a sample start from the same weights on every device. At the paper's
size that is about 21 million normals per sample, 0.1-0.4 s of one core; a GPU trains a sample in
10-40 ms, so drawn on the compute thread the draws, not the GPU, would set the pace.

`GroupDraws` therefore makes a group's draws on the worker's data threads (one task per seed, so
several threads share a group), straight into the group's stacked (B, ...) buffers, pinned on CUDA
so that the copy to the device does not block. Each seed still has its own generator and draws in the
same order into a contiguous slice, so the values are bit for bit those of `draw_group` on the
compute thread (tests/test_apm_prefetch.py checks it).

Memory: one sample's draws are `DrawPlan.nbytes` - at the paper's size (448 px, patch 14, hidden
4096,2048,1024) 82 MB against a 512-wide teacher (ViT-B/16) and 88 MB against a 768-wide one, the
parameters a batch trains (85 and 91 MB with the RGB head, for one-at-a-time training). The method
draws one group ahead, so at most two groups' draws exist on the host at once: the group being copied
in or trained (on a CPU its buffers are the trained parameters themselves) and the next. For a CPU
worker's group of 16 that is 1.3 GB more than drawing inline; on a GPU it is pinned host memory of at
most twice the group's parameters, half of what the group's parameters, gradients and Adam moments
take on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import torch
from torch import nn

Draws = dict[str, torch.Tensor]
"""Parameter name -> (B, *shape) float32 draws on the host, slice b from the group's seed b."""


@dataclass(frozen=True)
class DrawPlan:
    """What one seed's generator draws, in order: every parameter up to the last one kept (those
    before it are drawn whether kept or not, so the stream stays the network's), and which are kept."""

    order: tuple[tuple[str, tuple[int, ...]], ...]
    kept: frozenset[str]
    std: float

    @staticmethod
    def of(net: nn.Module, std: float, keep: Callable[[str], bool] = lambda name: True) -> DrawPlan:
        order = [(name, tuple(p.shape)) for name, p in net.named_parameters()]
        kept = [i for i, (name, _) in enumerate(order) if keep(name)]
        upto = kept[-1] + 1 if kept else 0
        return DrawPlan(tuple(order[:upto]), frozenset(order[i][0] for i in kept), std)

    @property
    def nbytes(self) -> int:
        """Bytes of one sample's kept draws (float32)."""
        return 4 * sum(_numel(shape) for name, shape in self.order if name in self.kept)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def allocate(plan: DrawPlan, batch: int, pin: bool = False) -> Draws:
    """Uninitialised (B, ...) buffers for the kept parameters; `pin`: page-locked, for a copy to
    CUDA that does not block (and does not stage through a bounce buffer)."""
    return {name: torch.empty((batch, *shape), pin_memory=pin) for name, shape in plan.order if name in plan.kept}


def draw_into(plan: DrawPlan, seed: int, out: Draws, index: int) -> None:
    """Seed `seed`'s draws into slice `index` of `out`. A slice of a contiguous stacked buffer is
    contiguous, so normal_ fills it exactly as it fills a fresh tensor of that shape."""
    generator = torch.Generator().manual_seed(seed)
    for name, shape in plan.order:
        target = out[name][index] if name in out else torch.empty(shape)
        target.normal_(0.0, plan.std, generator=generator)


def draw_group(plan: DrawPlan, seeds: Sequence[int], pin: bool = False) -> Draws:
    """A group's draws on this thread: what `GroupDraws` makes on the data threads."""
    out = allocate(plan, len(seeds), pin)
    for index, seed in enumerate(seeds):
        draw_into(plan, seed, out, index)
    return out


def _draw_when_allocated(plan: DrawPlan, seed: int, buffers: Future, index: int) -> None:
    """Waiting inside a pool task is safe here: the pool starts tasks in the order they were
    submitted, so the allocation this waits for is already running or done (or cancelled)."""
    draw_into(plan, seed, buffers.result(), index)


class GroupDraws:
    """One group's draws under way on `pool`: the buffers are allocated there too (pinning is a
    system call worth keeping off the compute thread), then one task per seed fills its slice."""

    def __init__(self, plan: DrawPlan, seeds: Sequence[int], pool: Executor, pin: bool) -> None:
        self.seeds = tuple(seeds)
        self._buffers: Future | None = pool.submit(allocate, plan, len(self.seeds), pin)
        self._tasks = [pool.submit(_draw_when_allocated, plan, seed, self._buffers, i) for i, seed in enumerate(self.seeds)]

    def take(self) -> Draws:
        """Wait for the draws and hand them over; this object keeps no reference, so the buffers
        live only as long as the caller's use of them (pinned memory returns to torch's cache)."""
        if self._buffers is None:
            raise RuntimeError("these draws were already taken")
        for task in self._tasks:
            task.result()
        draws = self._buffers.result()
        self._buffers, self._tasks = None, []
        return draws

    def cancel(self) -> None:
        """Drop draws that are no longer wanted; tasks that have not started never run."""
        for task in reversed(self._tasks):
            task.cancel()
        if self._buffers is not None:
            self._buffers.cancel()
        self._buffers, self._tasks = None, []
