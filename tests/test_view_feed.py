"""Views that do not depend on threads, made once per sample for all the view methods of a worker;
a method's failure kept to its own rows; FLOPs counted on the meta device (issue #21)."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from harness.config import RunConfig
from harness.engine.shards import Shard, plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.methods import METHODS
from harness.methods.base import SampleInput
from harness.methods.configs import ApmConfig
from harness.methods.tpt_views import make_augmented_views
from harness.methods.view_feed import VIEW_MEMORY, ViewFeed, ViewSpec, lookahead
from harness.methods.voting import ZeroMethod
from tasks.base import SampleRef
from tasks.synthetic import SyntheticTask

TASK = SyntheticTask(per_class=1, name="synthetic:1")
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
VIEW_METHODS = ("tpt", "c-tpt", "r-tpt", "tps", "zero", "mta", "rlcf", "ttl")
TIMING = {"seconds", "worker", "peak_memory_bytes", "peak_memory_samples"}
"""Columns that say how long, where and with how much memory: everything else must not depend on threads."""
APM = ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=2, lr=1e-3)


def _config(methods: tuple[str, ...], views: int = 8) -> RunConfig:
    small = {}
    for name in methods:
        kind = METHODS.get(name).settings_class()
        if kind is not None and "views" in {f.name for f in dataclasses.fields(kind)}:
            small[name] = kind(views=views)
    if "rlcf" in small:
        small["rlcf"] = dataclasses.replace(small["rlcf"], reward_model="teacher")  # offline
    if "apm" in methods:
        small["apm"] = APM
    return RunConfig(tasks=(TASK.name,), methods=methods, settings=tuple(small.items()))


def _rows(worker: ShardWorker, shard: Shard) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in worker.process(shard).to_pylist()]


@pytest.mark.parametrize("augmix", [False, True])
def test_views_made_on_four_threads_at_once_are_the_serial_views(augmix):
    images = [TASK.load(ref).image for ref in TASK.samples()[:8]]

    def views(k: int) -> torch.Tensor:
        return make_augmented_views(images[k], 6, 48, MEAN, STD, seed=1000 + k, augmix=augmix)

    serial = [views(k) for k in range(8)]
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(views, range(8)))
        assert all(torch.equal(a, b) for a, b in zip(serial, concurrent))


def test_the_look_ahead_grows_with_the_data_threads_within_a_memory_bound():
    sample = ViewSpec(63, 224, MEAN, STD, False, 0.08).nbytes  # 38.5 MB
    assert lookahead(1, sample) == 4  # one data thread: four samples, as a view method made alone
    assert lookahead(4, sample) == 10 and lookahead(4, 2 * sample) == 10
    assert lookahead(16, 2 * sample) == VIEW_MEMORY // (2 * sample) < 2 * 16 + 2
    assert lookahead(8, 4 * VIEW_MEMORY) == 1  # never less than the sample being computed


def test_the_feed_gives_every_spec_its_own_views_and_moves_forward_only():
    images = [TASK.load(ref).image for ref in TASK.samples()[:5]]
    samples = [_input(image, 7 + k) for k, image in enumerate(images)]
    plain, mixed = ViewSpec(3, 32, MEAN, STD, False, 0.08), ViewSpec(3, 32, MEAN, STD, True, 0.08)
    with ThreadPoolExecutor(2) as pool:
        feed = ViewFeed(samples, [plain, mixed, plain], pool, ahead=2)
        for k in range(5):
            got = feed.views(k, plain)
            assert got is feed.views(k, plain)  # made once: every method asking gets the same tensor
            assert torch.equal(got, make_augmented_views(images[k], 3, 32, MEAN, STD, 7 + k, False))
            assert torch.equal(feed.views(k, mixed), make_augmented_views(images[k], 3, 32, MEAN, STD, 7 + k, True))
        with pytest.raises(ValueError, match="moves forward only"):
            feed.views(1, plain)


def _input(image, seed: int) -> SampleInput:
    """What the feed reads of a sample: its image and its seed."""
    return SampleInput(SampleRef(f"s{seed}", 0, ""), image, "", seed, torch.zeros(4), 0.0)


def test_one_and_four_data_threads_give_identical_rows_for_every_view_method():
    """A GPU worker has as many data threads as its CPU share; the views, and so every row, must be
    those of one thread. Zero-shot and APM run beside them, as in a real run."""
    config = _config(("zeroshot", "apm", *VIEW_METHODS))
    shard = plan_shards([TASK], 6)[0]
    one = _rows(ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"), data_threads=1), shard)
    four = _rows(ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"), data_threads=4), shard)
    assert len(one) == 6 * 10 and all(r["error"] is None for r in one)
    for name in VIEW_METHODS:
        assert [r for r in one if r["method"] == name] == [r for r in four if r["method"] == name], name
    assert one == four


def test_view_methods_run_together_give_the_rows_each_gives_alone():
    """One feed serves several methods (equal specs share one tensor, another spec gets its own):
    each method's rows are those it gets as the worker's only method."""
    together = _config(("tpt", "zero", "mta"))
    mixed = dataclasses.replace(together.settings_of("zero"), augmix="on")
    together = dataclasses.replace(together, settings=(("mta", together.settings_of("mta")),
                                                       ("tpt", together.settings_of("tpt")), ("zero", mixed)))
    shard = plan_shards([TASK], 3)[0]
    rows = _rows(ShardWorker(together, {TASK.name: TASK}, RunIdentity("r", "f", "c"), data_threads=2), shard)
    for name in ("tpt", "zero", "mta"):
        alone = dataclasses.replace(together, methods=(name,), settings=((name, together.settings_of(name)),))
        expected = _rows(ShardWorker(alone, {TASK.name: TASK}, RunIdentity("r", "f", "c")), shard)
        assert [r for r in rows if r["method"] == name] == expected, name


class FailsOnOneSample(ZeroMethod):
    """ZERO, except that it raises on one sample, as a bug that some data trigger."""

    def adapt(self, teacher, task, features, sample):
        if sample.ref.sample_id == TASK.samples()[1].sample_id:
            raise ValueError("no such class\nsecond line")
        return super().adapt(teacher, task, features, sample)


def test_a_methods_error_is_kept_to_that_methods_rows():
    config = _config(("zeroshot", "apm", "zero", "tpt"))
    shard = Shard("s", TASK.name, tuple(TASK.samples()[:3]))
    reference = _rows(ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c")), shard)
    worker = ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"), data_threads=2)
    worker.methods[2] = FailsOnOneSample(config.settings_of("zero"), data_pool=worker.methods[2].data_pool,
                                         flop_teacher=worker.flop_teacher)
    rows = _rows(worker, shard)
    failed = TASK.samples()[1].sample_id
    assert [r for r in rows if r["method"] != "zero"] == [r for r in reference if r["method"] != "zero"]
    zero = {r["sample_id"]: r for r in rows if r["method"] == "zero"}
    assert zero[failed]["error"] == "ValueError: no such class" and zero[failed]["prediction"] is None
    assert zero[failed]["prediction_before"] is not None  # the untuned prediction was made before it failed
    assert [r for r in rows if r["method"] == "zero" and r["sample_id"] != failed] == \
        [r for r in reference if r["method"] == "zero" and r["sample_id"] != failed]


class NoTemplates(ZeroMethod):
    """ZERO, except that its prompt cannot be had: it fails before its first sample."""

    def templates(self, task):
        raise RuntimeError("no templates")


def test_a_method_that_fails_before_its_first_sample_gets_error_rows_and_the_others_stand():
    config = _config(("zeroshot", "zero", "mta"))
    worker = ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"))
    worker.methods[1] = NoTemplates(config.settings_of("zero"))
    rows = _rows(worker, Shard("s", TASK.name, tuple(TASK.samples()[:2])))
    assert [r["error"] for r in rows if r["method"] == "zero"] == ["RuntimeError: no templates"] * 2
    assert all(r["error"] is None for r in rows if r["method"] != "zero")


def test_flops_are_counted_on_the_meta_device_and_equal_the_real_devices_count(teacher):
    config = _config(("zeroshot", "ensemble", "apm", "tpt", "ttl", "rlcf"))
    worker = ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"))
    assert worker.flop_teacher.device.type == "meta"
    rows = _rows(worker, Shard("s", TASK.name, tuple(TASK.samples()[:2])))
    assert worker.teacher._image_flops is None  # the real teacher never ran the counting pass
    counted = {r["method"]: r["flops"] for r in rows}
    for name in config.methods:  # counted on the real teacher, as before
        assert counted[name] == METHODS.get(name)(config.settings_of(name)).flops(teacher, TASK), name
    assert counted["tpt"] == 731_600_384 and counted["zeroshot"] == 5_072_896 and counted["apm"] == 7_628_288


def test_the_meta_twin_of_a_local_teacher_is_its_own_architecture(siglip_dir):
    from harness.config import TeacherConfig
    from harness.models.teacher import load_teacher, meta_teacher

    real = load_teacher(TeacherConfig(pretrained=str(siglip_dir)))  # --model says apm-tiny; the folder, SigLIP
    twin = meta_teacher(real.config, real.source)
    assert twin.device.type == "meta" and twin.embed_dim == real.embed_dim == 192
    assert twin.image_flops == real.image_flops != meta_teacher(real.config).image_flops
