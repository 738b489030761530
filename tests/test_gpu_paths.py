"""The CUDA paths, tested where no GPU is: Ray's declared resources for scheduling, and fault injection
(a CUDA out-of-memory, a sticky CUDA error, CUDA's memory counters) for the rest."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from harness.config import ExecConfig, RunConfig
from harness.methods.configs import ApmConfig
from harness.device import PeakMemory, effective_precision, is_device_error, now, set_tf32
from harness.engine import runner
from harness.engine.pool import NodeResources, device_type, plan_pool
from harness.engine.shards import Shard, plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods import apm as apm_module
from tasks.registry import resolve_task
from conftest import squeeze_apm_batches

NODE = {"CPU": 32.0, "GPU": 8.0}


def _node(total: dict, free: dict | None = None, node_id: str = "a") -> NodeResources:
    return NodeResources(node_id, total, total if free is None else free, f"node {node_id}")


def test_the_pool_holds_only_workers_the_cluster_can_place():
    node = _node(NODE)
    assert plan_pool("cuda", [node], shards=100).workers == 8  # 4 CPUs each: the node's 32 / 8 GPUs
    share = plan_pool("cuda", [node], 100).shares[0]
    assert share.cpus == 4 and plan_pool("cuda", [node], 100).data_threads(share) == 4 and share.node_id == "a"
    assert plan_pool("cuda", [node], 100, cpus_per_worker=8).workers == 4  # the old hang: 8 actors, room for 4
    assert plan_pool("cuda", [_node(NODE, {"CPU": 32, "GPU": 3})], 100).workers == 3  # another job holds 5 GPUs
    assert plan_pool("cuda", [node, _node({"CPU": 4, "GPU": 4}, node_id="b")], 100).workers == 12  # 8 + 4 of 1 CPU
    assert plan_pool("cuda", [node], 100, workers=2).workers == 2
    assert plan_pool("cuda", [node], shards=3).workers == 3
    assert plan_pool("cpu", [_node({"CPU": 8})], 100, threads=2).workers == 4
    with pytest.raises(HarnessError, match="no GPU worker can be placed: each needs 1 GPU and 40 CPU"):
        plan_pool("cuda", [node], 100, cpus_per_worker=40)
    assert device_type("auto", 8) == "cuda" and device_type("auto", 0) == "cpu" and device_type("cpu", 8) == "cpu"
    with pytest.raises(HarnessError, match="--device cuda, but the Ray cluster has no GPU"):
        device_type("cuda", 0)


ECHO = """
import json, ray
from harness.engine.dispatch import dispatch
from harness.engine.placement import cluster_nodes
from harness.engine.pool import plan_pool
from harness.engine.shards import Shard
from harness.store import SCHEMA

class Echo:
    def prefetch(self, shard): return None
    def info(self): return {}
    def process(self, shard): return SCHEMA.empty_table()

ray.init(address="local", num_cpus=2, num_gpus=8, include_dashboard=False, _node_ip_address="127.0.0.1",
         log_to_driver=False)
pool = plan_pool("cuda", cluster_nodes(), 40, cpus_per_worker=1)
# what the runner did before: one actor per GPU, 1 CPU each, on a node with 2 CPUs: 6 can never be placed
actors = [ray.remote(num_cpus=1, num_gpus=1)(Echo).remote() for _ in range(8)]
written = []
result = dispatch(actors, [Shard(f"t-{i:05d}", "t", ()) for i in range(40)], lambda s, t: written.append(s.shard_id),
                  placement_seconds=60, gather_seconds=2)
print(json.dumps({"pool": pool.workers, "written": len(set(written)), "unplaced": result.unplaced}))
"""


def test_declared_gpus_that_cannot_all_be_placed_do_not_hang_the_run():
    done = subprocess.run([sys.executable, "-c", ECHO], capture_output=True, text=True, timeout=180,
                          env={"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                               "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pool": 2, "written": 40, "unplaced": 6}


def test_the_device_and_effective_precision_are_in_the_fingerprint_and_rows(monkeypatch):
    base = RunConfig(tasks=("synthetic:1",), methods=("zeroshot",))
    assert dataclasses.replace(base, device_type="cpu").fingerprint() != dataclasses.replace(base, device_type="cuda").fingerprint()
    assert effective_precision("cpu", "bf16") == "fp32" and effective_precision("cuda", "bf16") == "bf16"
    task = resolve_task("synthetic:1")
    bf16 = dataclasses.replace(base, teacher=dataclasses.replace(base.teacher, precision="bf16"), device_type="cpu")
    rows = ShardWorker(bf16, {task.name: task}, RunIdentity("r", "f", "c")).process(plan_shards([task], 2)[0]).to_pylist()
    assert {(r["device"], r["precision"]) for r in rows} == {("cpu", "fp32")}  # bf16 asked, fp32 computed: said
    made_on_cuda = dataclasses.replace(base, device_type="cuda")
    with pytest.raises(HarnessError, match="this run was made on cuda; --device cpu would change its results"):
        runner._with_device(made_on_cuda, ExecConfig(device="cpu"), None)


def test_tf32_is_off_on_cuda_whatever_the_precision():
    """fp32 scoring and losses run under fp16/bf16 runs too; the reduced-precision matmuls inside
    autocast never used TF32, so TF32 only ever changed the fp32 work."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for precision in ("fp32", "bf16", "fp16"):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
            set_tf32(torch.device("cuda"), precision)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False), precision
        set_tf32(torch.device("cpu"), "fp32")  # a CPU worker leaves the process's CUDA settings alone
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_timing_waits_for_the_device_and_peak_memory_is_the_methods_own(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    now(torch.device("cpu"))
    assert calls == []
    now(torch.device("cuda"))
    assert len(calls) == 1
    allocated = {"now": 3_000, "peak": 0}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: allocated.update(peak=allocated["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    memory = PeakMemory(torch.device("cuda"))
    memory.start()  # the teacher and cached classifiers hold 3,000 bytes already
    allocated["peak"] = 3_500
    assert memory.rise() == 500 and PeakMemory(torch.device("cpu")).rise() is None


def test_attention_is_counted_the_same_in_every_mode():
    """nn.MultiheadAttention's fast path and fused attention kernels are invisible to the counter;
    counting turns them off, so eval/no-grad, training and the meta device agree with the formula."""
    length, width = 10, 32
    mha = torch.nn.MultiheadAttention(width, 4, batch_first=True).eval()
    x = torch.randn(1, length, width)
    with torch.no_grad():
        fast = count_flops(lambda: mha(x, x, x, need_weights=False))
    slow = count_flops(lambda: mha.train()(x, x, x, need_weights=False))
    meta = count_flops(lambda: mha.to("meta").eval()(*(x.to("meta"),) * 3, need_weights=False))
    projections = 2 * length * width * (3 * width) + 2 * length * width * width
    attention = 2 * (2 * length * length * width)
    assert fast == slow == meta == projections + attention


def _samples(count: int):
    from harness.methods.base import SampleInput
    from harness.models.teacher import load_teacher
    from harness.config import TeacherConfig

    task = resolve_task("synthetic:1")
    teacher = load_teacher(TeacherConfig())
    refs = task.samples()[:count]
    images = [task.load(r) for r in refs]
    embeddings = teacher.encode_images(torch.stack([teacher.preprocess(i.image) for i in images]))
    return teacher, task, [SampleInput(r, i.image, i.content_hash, 10 + k, embeddings[k], 0.0)
                           for k, (r, i) in enumerate(zip(refs, images))]


def test_out_of_memory_halves_the_apm_batch_and_trains_again(monkeypatch):
    config = ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=3, lr=1e-3, batch_size=8)
    teacher, task, samples = _samples(8)
    small = apm_module.ApmMethod(dataclasses.replace(config, batch_size=2)).evaluate(teacher, task, samples)
    squeeze_apm_batches(monkeypatch, 2)
    method = apm_module.ApmMethod(config)
    outcomes = method.evaluate(teacher, task, samples)
    assert method._size_cap == 2 and {o.batch for o in outcomes} == {2}
    assert [o.prediction for o in outcomes] == [o.prediction for o in small] and all(o.error is None for o in outcomes)


def test_out_of_memory_chunks_tpts_views(monkeypatch):
    from harness.methods.configs import TptConfig
    from harness.methods.tpt import TptMethod

    teacher, task, samples = _samples(2)
    config = TptConfig(views=16)
    whole = TptMethod(config).evaluate(teacher, task, samples)
    real = teacher.encode_images

    def tight(pixels):
        if len(pixels) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(pixels)

    monkeypatch.setattr(teacher, "encode_images", tight)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    method = TptMethod(config)
    chunked = method.evaluate(teacher, task, samples)
    assert method._view_chunk == 3  # 15 augmented views: 15 -> 7 -> 3 at a time
    assert [o.prediction for o in chunked] == [o.prediction for o in whole]
    assert [x for o in chunked for x in o.losses] == pytest.approx([x for o in whole for x in o.losses], rel=1e-4)


def test_a_methods_error_is_its_own_rows_and_a_sticky_device_error_restarts_the_worker(monkeypatch):
    from harness.engine import worker as worker_module

    task = resolve_task("synthetic:1")
    config = RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "apm"), settings=(("apm", ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=1)),))
    worker = ShardWorker(config, {task.name: task}, RunIdentity("r", "f", "c"))
    shard = Shard("s", task.name, tuple(task.samples()[:2]))
    monkeypatch.setattr(worker.methods[1], "evaluate", lambda *a: (_ for _ in ()).throw(ValueError("a bug\nmore")))
    rows = worker.process(shard).to_pylist()  # APM's bug is APM's rows; zero-shot's rows stand
    assert [r["error"] for r in rows if r["method"] == "apm"] == ["ValueError: a bug"] * 2
    assert all(r["error"] is None and r["prediction"] is not None for r in rows if r["method"] == "zeroshot")
    sticky = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert is_device_error(sticky) and not is_device_error(ValueError("CUDA error"))
    restarted = []
    monkeypatch.setattr(worker_module, "_restart", lambda exc: restarted.append(exc))
    monkeypatch.setattr(worker.methods[1], "evaluate", lambda *a: (_ for _ in ()).throw(sticky))
    with pytest.raises(RuntimeError):
        worker.process(shard)
    assert restarted == [sticky]  # the process ends and Ray restarts the actor on a fresh device context
