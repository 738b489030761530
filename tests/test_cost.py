"""FLOPs on the rows are counted, per method, from what torch dispatches."""

import dataclasses

from harness.config import RunConfig
from harness.methods.configs import ApmConfig, TptConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from tasks.registry import resolve_task

TASK = resolve_task("synthetic:1")
APM = ApmConfig(image_size=32, patch_size=8, hidden=(64,), steps=5, lr=1e-3, pooling="mean")


def _flops(methods, apm=APM, tpt=TptConfig(views=8)):
    config = RunConfig(tasks=("synthetic:1",), methods=methods, settings=(("apm", apm), ("tpt", tpt),))
    worker = ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"))
    rows = worker.process(plan_shards([TASK], 2)[0]).to_pylist()
    return {r["method"]: r["flops"] for r in rows}, worker.teacher


def test_flops_per_method_follow_their_arithmetic():
    flops, teacher = _flops(("zeroshot", "apm", "tpt"))
    assert teacher.image_flops > 0
    assert flops["zeroshot"] == teacher.image_flops + 2 * 64 * 12  # one image forward + the (D x C) classifier
    assert flops["tpt"] > 8 * teacher.image_flops  # every view through the image tower, plus the text tower
    more, _ = _flops(("apm",), apm=dataclasses.replace(APM, steps=10))
    step = (more["apm"] - flops["apm"]) / 5  # each extra step adds one training step's FLOPs
    forward = flops["apm"] - teacher.image_flops - 5 * step
    assert step > 0 and 2.5 <= step / forward <= 3.5  # backward costs about twice the forward
