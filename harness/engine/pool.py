"""How many workers a cluster can really hold, and what each gets.

A GPU worker takes one GPU and its share of its node's CPUs (they decode images and make TPT's views,
so the GPU is not left waiting); a CPU worker takes `--threads` CPUs. The count is what the nodes can
place (a GPU and its CPUs on the same node), what is free now (other jobs hold some), `--workers`, and
the shards to do: never an actor that cannot be placed, whose queued shards would wait for ever."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class PoolPlan:
    device: str
    """cpu or cuda."""
    workers: int
    cpus: float
    """CPUs reserved per worker."""
    gpus: int
    """GPUs per worker (0 or 1)."""
    data_threads: int
    """Threads a worker decodes and makes views with."""
    placeable: int = 0
    """Workers of this size the cluster can place now, before --workers and the shards cap the count."""

    def describe(self) -> str:
        gpu = " and 1 GPU" if self.gpus else ""
        return f"{self.workers} {self.device} worker(s), each {self.cpus:g} CPU(s){gpu}"

    def capped(self, asked: int | None) -> str | None:
        """The note for a --workers the cluster cannot hold (None when it can): the run goes on with
        the workers that fit rather than queueing actors that would never be placed."""
        if not asked or asked <= self.placeable:
            return None
        gpu = " and 1 GPU" if self.gpus else ""
        return (f"--workers {asked}: the cluster can place {self.placeable} {self.device.upper()} worker(s) of "
                f"{self.cpus:g} CPU(s){gpu}; running {self.workers}")


def device_type(requested: str, cluster_gpus: float) -> str:
    """--device auto uses GPUs when the cluster has one; cuda insists on them."""
    if requested == "cuda" and cluster_gpus < 1:
        raise HarnessError("--device cuda, but the Ray cluster has no GPU")
    return "cuda" if requested != "cpu" and cluster_gpus >= 1 else "cpu"


def plan_pool(device: str, nodes: list[dict[str, float]], available: dict[str, float], shards: int,
              workers: int | None = None, threads: int = 1, cpus_per_worker: float | None = None) -> PoolPlan:
    """`nodes`: each alive node's total resources ({"CPU": 32, "GPU": 8}); `available`: what the
    cluster has free now. Raises when not one worker fits."""
    if device == "cpu":
        cpus = float(cpus_per_worker or threads)
        free = math.floor(available.get("CPU", 0) / cpus)
        count = workers or max(1, int(sum(n.get("CPU", 0) for n in nodes) // cpus))
        count = max(1, min(count, free or 1, shards))
        return PoolPlan("cpu", count, cpus, 0, 1, placeable=free)
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if cpus_per_worker is None:  # the node's CPUs shared among its GPUs (the tightest node decides)
        cpus_per_worker = max(1.0, min(math.floor(n.get("CPU", 0) / n["GPU"]) for n in gpu_nodes)) if gpu_nodes else 1.0
    cpus = float(cpus_per_worker)
    placeable = sum(min(int(n["GPU"]), int(n.get("CPU", 0) // cpus)) for n in gpu_nodes)
    free = min(int(available.get("GPU", 0)), int(available.get("CPU", 0) // cpus))
    count = min(placeable, free, workers or placeable, shards)
    if count < 1:
        raise HarnessError(
            f"no GPU worker can be placed: each needs 1 GPU and {cpus:g} CPU(s) on one node "
            f"(free now: {available.get('GPU', 0):g} GPU(s), {available.get('CPU', 0):g} CPU(s); "
            "--cpus-per-worker lowers the CPUs, --device cpu runs without GPUs)"
        )
    return PoolPlan("cuda", count, cpus, 1, max(1, int(cpus)), placeable=min(placeable, free))
