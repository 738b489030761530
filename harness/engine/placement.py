"""Where workers run: the cluster's nodes with what each has free, a worker pinned to the node it was
sized for, and a worker's place (node and GPU) in words a user can act on. A worker that fails while
it loads cannot answer a question, so it writes its place into its exception; the dispatcher reads it
back when it retires that worker. Ray is imported inside the functions: the runner imports this
module before ray_session has set the environment Ray reads when it is first imported."""

from __future__ import annotations

import socket
from typing import Any

from harness.engine.pool import NodeResources, NodeShare

PLACE_NOTE = "apm-bench worker place: "
"""Starts the line a worker adds to an exception raised while it loads (a note: Python prints it
after the error, and Ray's report of a failed creation carries the worker's traceback text)."""


def node_name(host: str, ip: str, node_id: str) -> str:
    return f"node {host} ({ip}, id {node_id[:8]})"


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes, each with its total and free resources and its name."""
    import ray

    free = _free_per_node()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if free is None:  # without Ray's per-node view, one node's free resources are the cluster's
        free = {nodes[0]["NodeID"]: ray.available_resources()} if len(nodes) == 1 else {}
    return [NodeResources(node["NodeID"], dict(node.get("Resources", {})),
                          free.get(node["NodeID"], dict(node.get("Resources", {}))),
                          node_name(node.get("NodeManagerHostname", "?"), node.get("NodeManagerAddress", "?"),
                                    node["NodeID"]))
            for node in nodes]


def _free_per_node() -> dict[str, dict[str, float]] | None:
    """Free resources by node id (a resource none is left of is absent). Ray 2.60 has no public call
    for this: ray.available_resources() sums over nodes, and ray.util.state.list_nodes needs the
    dashboard (which the local instance does not start) and gives totals only. This DeveloperAPI is
    the one Ray's own TPU and Serve code uses; None if a later Ray has moved it."""
    try:
        from ray._private.state import available_resources_per_node
    except ImportError:
        return None
    return available_resources_per_node()


def actor_options(share: NodeShare, gpus: int) -> dict[str, Any]:
    """Ray options for the workers of `share`: their CPUs and GPU, on the node they were sized for
    (not soft: elsewhere their CPU reservation would be another node's share)."""
    options: dict[str, Any] = {"num_cpus": share.cpus, "num_gpus": gpus}
    if share.node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(share.node_id, soft=False)
    return options


def where() -> str:
    """Inside a worker: its node, and the GPU(s) Ray gave it (the physical index, as
    CUDA_VISIBLE_DEVICES names it, which nvidia-smi shows too)."""
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU") or []
    name = node_name(socket.gethostname(), ray.util.get_node_ip_address(), context.get_node_id())
    return f"{name}, GPU {','.join(gpus)}" if gpus else name


def placed(cls: type) -> type:
    """`cls` as a worker that tells where it runs: in info() and, when its construction fails (a
    broken GPU, memory another process holds), in the exception that ends it."""

    class Placed(cls):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except Exception as exc:
                exc.add_note(PLACE_NOTE + where())
                raise

        def info(self) -> dict[str, str]:
            return {**super().info(), "place": where()}

    return Placed


def place_in(text: str) -> str | None:
    """The place a failed worker wrote into its exception's text, if it did."""
    found = [line.strip()[len(PLACE_NOTE):] for line in text.splitlines() if line.strip().startswith(PLACE_NOTE)]
    return found[-1] if found else None


def without_place(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith(PLACE_NOTE))
