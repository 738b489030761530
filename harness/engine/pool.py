"""How many workers a cluster can really hold, and what each gets.

A GPU worker takes one GPU and its share of its own node's CPUs (they decode images and make TPT's
views, so the GPU is not left waiting); a CPU worker takes `--threads` CPUs. Each node is sized from
its own free GPUs and CPUs (a GPU and its CPUs must be on the same node, and nodes differ: 8 GPUs
with 16 CPUs beside 2 GPUs with 64), so a GPU worker is pinned to the node it was sized for. The count
is what the nodes can place now (other jobs hold some), `--workers`, and the shards to do: never an
actor that cannot be placed, whose queued shards would wait for ever."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class NodeResources:
    """One alive node as the planner sees it."""

    node_id: str
    total: Mapping[str, float]
    """Its resources ({"CPU": 32, "GPU": 8})."""
    free: Mapping[str, float]
    """What is not held by other actors or jobs now."""
    name: str = ""
    """How a user finds it (host, IP, Ray node id), for notes."""


@dataclass(frozen=True)
class NodeShare:
    """The workers one node gets, all of one size."""

    node_id: str | None
    """The node they are pinned to; None lets Ray place them (CPU workers)."""
    workers: int
    cpus: float
    """CPUs reserved per worker."""
    name: str = ""


@dataclass(frozen=True)
class PoolPlan:
    device: str
    """cpu or cuda."""
    shares: tuple[NodeShare, ...]
    gpus: int
    """GPUs per worker (0 or 1)."""
    placeable: int = 0
    """Workers the cluster can place now, before --workers and the shards cap the count."""
    sizes: tuple[float, ...] = ()
    """CPUs per worker on each node that could hold one, for the notes."""

    @property
    def workers(self) -> int:
        return sum(s.workers for s in self.shares)

    def data_threads(self, share: NodeShare) -> int:
        """Threads a worker decodes and makes views with: a GPU worker uses the CPUs it reserved."""
        return max(1, int(share.cpus)) if self.gpus else 1

    def describe(self) -> str:
        nodes = [s for s in self.shares if s.workers]
        where = f" on {len(nodes)} nodes" if len(nodes) > 1 else ""
        return f"{self.workers} {self.device} worker(s){where}, each {self._size([s.cpus for s in nodes])}"

    def capped(self, asked: int | None) -> str | None:
        """The note for a --workers the cluster cannot hold (None when it can): the run goes on with
        the workers that fit rather than queueing actors that would never be placed."""
        if not asked or asked <= self.placeable:
            return None
        return (f"--workers {asked}: the cluster can place {self.placeable} {self.device.upper()} worker(s) of "
                f"{self._size(self.sizes or [s.cpus for s in self.shares])}; running {self.workers}")

    def _size(self, cpus: list[float]) -> str:
        low, high = min(cpus, default=0.0), max(cpus, default=0.0)
        text = f"{low:g}" if low == high else f"{low:g} to {high:g}"
        return f"{text} CPU(s){' and 1 GPU' if self.gpus else ''}"


def device_type(requested: str, cluster_gpus: float) -> str:
    """--device auto uses GPUs when the cluster has one; cuda insists on them."""
    if requested == "cuda" and cluster_gpus < 1:
        raise HarnessError("--device cuda, but the Ray cluster has no GPU")
    return "cuda" if requested != "cpu" and cluster_gpus >= 1 else "cpu"


def plan_pool(device: str, nodes: list[NodeResources], shards: int, workers: int | None = None, threads: int = 1,
              cpus_per_worker: float | None = None) -> PoolPlan:
    """The workers to start on `nodes` (the alive ones). Raises when not one GPU worker fits."""
    if device == "cpu":
        return _cpu_pool(nodes, shards, workers, float(cpus_per_worker or threads))
    room: list[tuple[NodeResources, float, int]] = []  # node, CPUs per worker there, workers it can take now
    for node in nodes:
        gpus = node.total.get("GPU", 0)
        if gpus >= 1:
            cpus = float(cpus_per_worker or max(1, math.floor(node.total.get("CPU", 0) / gpus)))
            room.append((node, cpus, max(0, min(int(node.free.get("GPU", 0)), int(node.free.get("CPU", 0) // cpus)))))
    placeable = sum(fits for _, _, fits in room)
    count = min(placeable, workers or placeable, shards)
    if count < 1:
        sizes = sorted({cpus for _, cpus, _ in room}) or [float(cpus_per_worker or 1)]
        size = f"{sizes[0]:g}" if len(sizes) == 1 else f"{sizes[0]:g} to {sizes[-1]:g}"
        free_gpus = sum(n.free.get("GPU", 0) for n, _, _ in room)
        free_cpus = sum(n.free.get("CPU", 0) for n, _, _ in room)
        raise HarnessError(
            f"no GPU worker can be placed: each needs 1 GPU and {size} CPU(s) on one node "
            f"(free now on the {len(room)} GPU node(s): {free_gpus:g} GPU(s), {free_cpus:g} CPU(s); "
            "--cpus-per-worker lowers the CPUs, --device cpu runs without GPUs)"
        )
    taken = _spread(count, [fits for _, _, fits in room])
    shares = tuple(NodeShare(node.node_id, n, cpus, node.name) for (node, cpus, _), n in zip(room, taken) if n)
    return PoolPlan("cuda", shares, 1, placeable=placeable, sizes=tuple(cpus for _, cpus, fits in room if fits))


def _cpu_pool(nodes: list[NodeResources], shards: int, workers: int | None, cpus: float) -> PoolPlan:
    """CPU workers are all of one size, and Ray places each where it fits: no pinning."""
    free = sum(math.floor(n.free.get("CPU", 0) / cpus) for n in nodes)  # a worker's CPUs are on one node
    count = workers or max(1, int(sum(n.total.get("CPU", 0) for n in nodes) // cpus))
    count = max(1, min(count, free or 1, shards))
    return PoolPlan("cpu", (NodeShare(None, count, cpus),), 0, placeable=free)


def _spread(count: int, room: list[int]) -> list[int]:
    """`count` workers over nodes with `room` each, one node at a time in turn: a small pool spans
    nodes rather than filling the first, so one bad node costs the fewest workers."""
    taken = [0] * len(room)
    count = min(count, sum(room))
    while count:
        for i, fits in enumerate(room):
            if count and taken[i] < fits:
                taken[i] += 1
                count -= 1
    return taken
