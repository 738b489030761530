"""One bad GPU retires one worker, not the run (#21, item 4). Faults are injected into real Ray actors:
the first worker to claim a marker file has the broken GPU, and its construction fails (at once, or
when Ray restarts it after a sticky CUDA error). It is retired with a note naming its node and GPU,
its shards go to the others, and the run finishes; when every worker fails to load, that is the
run's own failure, one line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness import resultfiles
from tests.test_reliability import _env
from tests.test_uneven_pool import run_script

CLAIM = """
def claim(mark):
    '''True for the one worker that first claims `mark` (its actor id and GPU are written there,
    atomically: a restarted worker finds itself by its actor id).'''
    import os, ray
    context = ray.get_runtime_context()
    me = context.get_actor_id()
    spare = f"{mark}.{os.getpid()}"
    with open(spare, "w") as file:
        file.write(f"{me} {','.join(context.get_accelerator_ids().get('GPU') or [])}")
    try:
        os.link(spare, mark)
        return True
    except FileExistsError:
        return open(mark).read().split()[0] == me
    finally:
        os.unlink(spare)
"""

FAULTS = CLAIM + """
import json, os, sys, time
import ray
from harness.engine.dispatch import dispatch
from harness.engine.placement import actor_options, cluster_nodes, placed
from harness.engine.pool import plan_pool
from harness.engine.shards import Shard
from harness.errors import HarnessError
from harness.store import SCHEMA

class Gpu:
    def __init__(self, fault, mark):
        broken = claim(mark)
        if fault == "all":  # the user's error: every worker meets it
            raise HarnessError("cannot load teacher --model ViT-B-16 --pretrained nowhere.pt: no such file")
        if broken and (fault == "first" or ray.get_runtime_context().was_current_actor_reconstructed):
            raise HarnessError("cannot load teacher --model ViT-B-16 --pretrained openai: CUDA error: "
                               "uncorrectable ECC error encountered")
        self.crash = broken and fault == "restart"

    def info(self):
        return {"worker": str(os.getpid())}

    def prefetch(self, shard):
        return None

    def process(self, shard):
        if self.crash:
            os._exit(70)  # what a sticky CUDA error does to a worker (worker._restart): Ray restarts it
        time.sleep(0.05)
        return SCHEMA.empty_table()

ray.init(address="local", num_cpus=3, num_gpus=3, include_dashboard=False, _node_ip_address="127.0.0.1",
         log_to_driver=False)
out = {}
for fault in ("first", "restart", "all"):
    pool = plan_pool("cuda", cluster_nodes(), 100)
    share = pool.shares[0]
    mark = os.path.join(sys.argv[1], fault)
    cls = ray.remote(placed(Gpu)).options(**actor_options(share, pool.gpus), max_restarts=2, max_task_retries=0)
    actors = [cls.remote(fault, mark) for _ in range(share.workers)]
    written = []
    try:
        result = dispatch(actors, [Shard(f"t-{i:05d}", "t", ()) for i in range(24)],
                          lambda s, t: written.append(s.shard_id), names=[share.name] * len(actors),
                          placement_seconds=60, gather_seconds=2)
        out[fault] = {"written": len(set(written)), "retired": result.retired, "failed": result.failed}
    except HarnessError as exc:
        out[fault] = {"error": str(exc), "written": len(written)}
    out[fault].update(workers=len(actors), broken=open(mark).read().split()[1], node=share.name)
    for actor in actors:
        ray.kill(actor, no_restart=True)
    while ray.available_resources().get("GPU", 0) < 3:
        time.sleep(0.1)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> dict:
    """The three faults, each on its own pool of 3 workers on 3 declared GPUs of one local Ray."""
    return run_script(FAULTS, str(tmp_path_factory.mktemp("marks")))


@pytest.mark.parametrize("fault", ["first", "restart"])
def test_a_worker_that_cannot_load_is_retired_alone(faults, fault):
    got = faults[fault]
    assert got["workers"] == 3 and got["written"] == 24 and not got["failed"]  # every shard, on the other two
    (note,) = got["retired"]
    gpu = got["broken"] if fault == "first" else r"\d"  # a restarted worker may be given another GPU
    assert re.fullmatch(rf"retired the worker on node \S+ \(127\.0\.0\.1, id [0-9a-f]{{8}}\), GPU {gpu}: "
                        r"cannot load teacher --model ViT-B-16 --pretrained openai: CUDA error: "
                        r"uncorrectable ECC error encountered", note), note
    assert got["node"] in note  # the node the pool sized it for


def test_every_worker_failing_to_load_is_the_runs_failure_in_one_line(faults):
    got = faults["all"]
    assert got["error"] == "cannot load teacher --model ViT-B-16 --pretrained nowhere.pt: no such file"
    assert got["written"] == 0


RUN = CLAIM + """
import sys
from harness.engine import runner
from harness.engine.worker import ShardWorker
from harness.errors import HarnessError

MARK = sys.argv[1]

class BrokenGpu(ShardWorker):
    '''The worker that claims MARK meets a sticky CUDA error in its first shard; its GPU stays broken,
    so its teacher cannot be loaded again when Ray restarts it.'''

    def __init__(self, *args, **kwargs):
        import ray
        self.broken = claim(MARK)
        if self.broken and ray.get_runtime_context().was_current_actor_reconstructed:
            open(MARK + ".failed", "w").close()
            raise HarnessError("cannot load teacher --model apm-mini: CUDA error: uncorrectable ECC error encountered")
        super().__init__(*args, **kwargs)
        if self.broken:
            def sticky(*args, **kwargs):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            self.methods[0].evaluate = sticky

    def process(self, shard):
        # the others work until the broken one has failed to load again: the run is still going then
        import os, time
        deadline = time.time() + 120
        while not self.broken and not os.path.exists(MARK + ".failed") and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        return super().process(shard)

runner.ShardWorker = BrokenGpu
sys.argv = ["apm-bench", "run", *sys.argv[2:]]
from harness.entry import main
main()
"""


def test_a_run_whose_worker_breaks_finishes_on_the_others_with_a_note(tmp_path):
    args = ["--task", "synthetic:1", "--method", "zeroshot", "--shard-size", "1", "--workers", "2", "--no-progress",
            "--run-id", "broken"]
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "mark"), *args], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: retired")]
    assert len(notes) == 1 and re.fullmatch(
        r"note: retired the worker on node \S+ \(127\.0\.0\.1, id [0-9a-f]{8}\): cannot load teacher --model apm-mini: "
        r"CUDA error: uncorrectable ECC error encountered", notes[0]), done.stderr[-3000:]
    assert "12/12 shards" in done.stdout and "Traceback" not in done.stderr
    rows = resultfiles.read_rows([tmp_path / "results" / "broken"])
    assert len(rows) == 12 and rows["error"].isna().all() and rows["worker"].nunique() == 1


def test_the_place_a_worker_writes_is_not_taken_for_its_error():
    from harness.engine.dispatch import worker_failure
    from harness.engine.placement import PLACE_NOTE, place_in

    report = ("The actor died because of an error raised in its creation task, ray::ShardActor.__init__() (pid=7)\n"
              '  File "worker.py", line 9, in __init__\nModuleNotFoundError: No module named \'open_clip\'\n'
              f"{PLACE_NOTE}node gpu3 (10.0.0.7, id 1a2b3c4d), GPU 5")
    assert str(worker_failure(RuntimeError(report))) == (
        "a worker failed (RuntimeError): ModuleNotFoundError: No module named 'open_clip'")
    assert place_in(report) == "node gpu3 (10.0.0.7, id 1a2b3c4d), GPU 5"
