"""Uneven clusters (#21, item 6): each node's GPU workers are sized from that node's own free GPUs and
CPUs, and pinned there, so a worker's CPU reservation is its own node's share. The planner is tested
on numbers; the pinning on a real local Ray cluster of two nodes with declared GPUs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from harness.engine.pool import NodeResources, plan_pool
from harness.errors import HarnessError

NARROW = {"CPU": 16.0, "GPU": 8.0}
WIDE = {"CPU": 64.0, "GPU": 2.0}


def _node(node_id: str, total: dict, free: dict | None = None) -> NodeResources:
    return NodeResources(node_id, total, total if free is None else free, f"node {node_id}")


def _shares(plan) -> dict:
    return {s.node_id: (s.workers, s.cpus) for s in plan.shares}


def test_each_node_is_sized_from_its_own_cpus_and_gpus():
    plan = plan_pool("cuda", [_node("a", NARROW), _node("b", WIDE)], shards=100)
    assert _shares(plan) == {"a": (8, 2.0), "b": (2, 32.0)}  # the tightest node's 2 CPUs each starved b's GPUs
    assert [plan.data_threads(s) for s in plan.shares] == [2, 32]
    assert plan.describe() == "10 cuda worker(s) on 2 nodes, each 2 to 32 CPU(s) and 1 GPU"
    assert plan.capped(20) == "--workers 20: the cluster can place 10 CUDA worker(s) of 2 to 32 CPU(s) and 1 GPU; running 10"
    assert _shares(plan_pool("cuda", [_node("a", NARROW), _node("b", WIDE)], 100, cpus_per_worker=8)) == {
        "a": (2, 8.0), "b": (2, 8.0)}


def test_a_node_whose_gpus_another_job_holds_gets_no_worker():
    taken = _node("a", NARROW, {"CPU": 16.0})  # Ray leaves out a resource none is left of
    plan = plan_pool("cuda", [taken, _node("b", WIDE)], 100)
    assert _shares(plan) == {"b": (2, 32.0)} and plan.describe() == "2 cuda worker(s), each 32 CPU(s) and 1 GPU"
    # free GPUs on one node and free CPUs on another do not make a worker
    plan = plan_pool("cuda", [_node("a", NARROW, {"GPU": 8.0, "CPU": 1.0}), _node("b", WIDE, {"CPU": 64.0, "GPU": 1.0})], 100)
    assert _shares(plan) == {"b": (1, 32.0)}
    with pytest.raises(HarnessError, match="no GPU worker can be placed: each needs 1 GPU and 2 to 32 CPU"):
        plan_pool("cuda", [_node("a", NARROW, {"GPU": 8.0, "CPU": 1.0}), _node("b", WIDE, {"CPU": 64.0})], 100)


def test_a_small_pool_spans_the_nodes_and_cpu_pools_are_not_pinned():
    nodes = [_node("a", NARROW), _node("b", WIDE), _node("cpu-only", {"CPU": 96.0})]
    assert _shares(plan_pool("cuda", nodes, 100, workers=3)) == {"a": (2, 2.0), "b": (1, 32.0)}
    assert _shares(plan_pool("cuda", nodes, shards=1)) == {"a": (1, 2.0)}
    cpu = plan_pool("cpu", [_node("a", {"CPU": 3.0}), _node("b", {"CPU": 3.0})], 100, threads=2)
    assert _shares(cpu) == {None: (2, 2.0)} and cpu.placeable == 2  # 2 CPUs fit once on each node, not 3 times
    assert cpu.describe() == "2 cpu worker(s), each 2 CPU(s)"


PINNED = """
import json, time
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from harness.engine.placement import actor_options, cluster_nodes
from harness.engine.pool import plan_pool

cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=4, num_gpus=4, node_ip_address="127.0.0.1",
                                                            include_dashboard=False))
wide = cluster.add_node(num_cpus=8, num_gpus=1, node_ip_address="127.0.0.1")
ray.init(address=cluster.address, log_to_driver=False)
head = cluster.head_node.node_id

class Probe:
    def where(self):
        context = ray.get_runtime_context()
        return [context.get_node_id(), context.get_assigned_resources()]

# another job holds 2 of the head's 4 GPUs and 2 of its 4 CPUs
other = ray.remote(Probe).options(num_cpus=2, num_gpus=2,
                                  scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
ray.get(other.where.remote())
deadline = time.time() + 30
while time.time() < deadline and next(n for n in cluster_nodes() if n.node_id == head).free.get("GPU", 0) > 2:
    time.sleep(0.1)
pool = plan_pool("cuda", cluster_nodes(), 100)
asked, actors = [], []
for share in pool.shares:
    for _ in range(share.workers):
        asked.append([share.node_id, share.cpus])
        actors.append(ray.remote(Probe).options(**actor_options(share, pool.gpus)).remote())
placed = ray.get([a.where.remote() for a in actors], timeout=60)
print(json.dumps({"head": head, "wide": wide.node_id, "asked": asked, "placed": placed, "describe": pool.describe()}))
ray.shutdown()
cluster.shutdown()
"""


def run_script(code: str, *args: str, timeout: float = 240) -> dict:
    """`code` in a fresh Python with a private Ray temp folder (the local cluster's address file and
    sessions stay there); its last line of output, as JSON. Every process it started is ended."""
    temp = tempfile.mkdtemp(prefix="apm-ray-", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: its Ray processes too
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_workers_are_pinned_to_the_node_they_were_sized_for():
    got = run_script(PINNED)
    head, wide = got["head"], got["wide"]
    assert sorted(map(tuple, got["asked"])) == sorted([(head, 1.0), (head, 1.0), (wide, 8.0)])
    assert got["describe"] == "3 cuda worker(s) on 2 nodes, each 1 to 8 CPU(s) and 1 GPU"
    for (node, cpus), (where, resources) in zip(got["asked"], got["placed"]):
        assert where == node and resources == {"CPU": cpus, "GPU": 1.0}
