"""APM's initial weights drawn ahead on the data threads are the weights drawn inline, bit for bit, so
rows do not depend on whether a worker has data threads or how many."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from harness.config import TeacherConfig
from harness.methods import apm as apm_module
from harness.methods.base import SampleInput
from harness.methods.configs import ApmConfig
from harness.models.apm import ApmNet, draw_parameters
from harness.models.apm_batched import BatchedApm, train_batched
from harness.models.apm_init import DrawPlan, GroupDraws, draw_group
from harness.models.teacher import load_teacher
from tasks.registry import resolve_task
from conftest import squeeze_apm_batches

SMALL = ApmConfig(image_size=32, patch_size=8, hidden=(32, 16), steps=3, lr=1e-3)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="test-data") as threads:
        yield threads


@pytest.fixture(scope="module")
def samples():
    task = resolve_task("synthetic:1")
    teacher = load_teacher(TeacherConfig())
    refs = task.samples()[:5]
    images = [task.load(r) for r in refs]
    embeddings = teacher.encode_images(torch.stack([teacher.preprocess(i.image) for i in images]))
    return teacher, task, [SampleInput(r, i.image, i.content_hash, 20 + k, embeddings[k], 0.0)
                           for k, (r, i) in enumerate(zip(refs, images))]


def test_draws_made_ahead_are_the_inline_draws_bit_for_bit(pool):
    net = ApmNet(dataclasses.replace(SMALL, use_patch=True), 64)
    seeds = [3, 99, 3, 12345]
    ahead = GroupDraws(net.draw_plan(batched=True), seeds, pool, pin=False).take()
    inline = BatchedApm(net, seeds).params
    assert set(ahead) == set(inline) and not any(name.startswith("rgb_head.") for name in ahead)
    assert all(torch.equal(ahead[name], inline[name].detach()) for name in inline)
    single = GroupDraws(net.draw_plan(batched=False), [99], pool, pin=False).take()
    for name, value in zip(dict(net.named_parameters()), draw_parameters(net, 99)):
        assert torch.equal(single[name][0], value), name  # the RGB head too, for one-at-a-time training
    net.reset_parameters(0)
    net.reset_parameters(99, single)
    assert all(torch.equal(p, v) for p, v in zip(net.parameters(), draw_parameters(net, 99)))


def test_a_plan_keeps_the_stream_of_the_parameters_it_leaves_out():
    net = ApmNet(SMALL, 64)
    names = [n for n, _ in net.named_parameters()]
    late = DrawPlan.of(net, SMALL.init_std, lambda name: name == names[3])  # drawn after three it does not keep
    assert [n for n, _ in late.order] == names[:4] and late.kept == {names[3]}
    assert torch.equal(draw_group(late, [5])[names[3]][0], draw_parameters(net, 5)[3])
    assert late.nbytes == 4 * dict(net.named_parameters())[names[3]].numel()


def test_training_from_draws_made_ahead_gives_the_same_losses_and_embeddings(pool):
    net = ApmNet(SMALL, 64)
    pixels, targets, seeds = torch.randn(3, 3, 32, 32), torch.randn(3, 64), [1, 2, 3]
    inline = train_batched(net, pixels, targets, seeds)
    ahead = train_batched(net, pixels, targets, seeds, "fp32", GroupDraws(net.draw_plan(True), seeds, pool, False).take())
    assert torch.equal(inline.losses, ahead.losses) and torch.equal(inline.embeddings, ahead.embeddings)


def _rows(outcomes):
    return [(o.prediction, o.top5, o.confidence, o.losses, o.steps, o.batch, o.error) for o in outcomes]


@pytest.mark.parametrize("config", [dataclasses.replace(SMALL, batch_size=2),
                                    dataclasses.replace(SMALL, batch_size=1, rgb_weight=0.5)],
                         ids=["groups-of-2", "one-at-a-time-with-rgb"])
def test_evaluate_with_data_threads_gives_the_rows_of_inline_draws(config, pool, samples):
    teacher, task, inputs = samples
    inline = apm_module.ApmMethod(config).evaluate(teacher, task, inputs)
    method = apm_module.ApmMethod(config)
    method.data_pool = pool
    assert _rows(method.evaluate(teacher, task, inputs)) == _rows(inline)
    assert {o.batch for o in inline} == ({2, 1} if config.batch_size == 2 else {1})  # 5 samples: 2 + 2 + 1


def test_out_of_memory_with_draws_ahead_trains_the_smaller_group_from_the_same_weights(monkeypatch, pool, samples):
    teacher, task, inputs = samples
    config = dataclasses.replace(SMALL, batch_size=4)
    expected = apm_module.ApmMethod(dataclasses.replace(config, batch_size=2)).evaluate(teacher, task, inputs)
    squeeze_apm_batches(monkeypatch, 2)
    method = apm_module.ApmMethod(config)
    method.data_pool = pool
    assert _rows(method.evaluate(teacher, task, inputs)) == _rows(expected) and method._size_cap == 2


def test_draws_are_handed_over_once_and_unwanted_ones_are_dropped(pool):
    net = ApmNet(SMALL, 64)
    draws = GroupDraws(net.draw_plan(True), [1, 2], pool, pin=False)
    draws.take()
    with pytest.raises(RuntimeError, match="already taken"):
        draws.take()
    dropped = GroupDraws(net.draw_plan(True), list(range(8)), pool, pin=False)
    dropped.cancel()
    with pytest.raises(RuntimeError, match="already taken"):
        dropped.take()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_draws_for_cuda_are_pinned_and_copied_without_changing_them(pool):
    net = ApmNet(SMALL, 64).cuda()
    seeds = [4, 5]
    drawn = GroupDraws(net.draw_plan(True), seeds, pool, pin=True).take()
    assert all(t.is_pinned() for t in drawn.values())
    params = BatchedApm(net, seeds, drawn).params
    inline = BatchedApm(net, seeds).params
    assert all(torch.equal(params[n], inline[n]) for n in inline)
