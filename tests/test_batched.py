"""Batched TTT trains each sample's APM exactly as if alone (to float tolerance)."""

import dataclasses

import pytest
import torch

from harness.config import RunConfig
from harness.methods.configs import ApmConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.methods.apm import batch_size, run_ttt
from harness.models.apm import ApmNet
from harness.models.apm_batched import BatchedApm, train_batched
from tasks.registry import resolve_task

SMALL = ApmConfig(image_size=64, patch_size=8, hidden=(128, 64), steps=12, lr=1e-3)


@pytest.mark.parametrize(
    "config",
    [SMALL, dataclasses.replace(SMALL, pooling="mean", use_patch=True, chunk_size=10),
     dataclasses.replace(SMALL, recipe="demo")],
    ids=["attention", "mean+patch+chunks", "demo-recipe"],
)
def test_batched_training_equals_one_at_a_time(config):
    torch.manual_seed(0)
    net = ApmNet(config, 32)
    pixels, targets, seeds = torch.randn(5, 3, 64, 64), torch.randn(5, 32), [11, 12, 13, 14, 15]
    embeddings, losses, _ = train_batched(net, pixels, targets, seeds)
    assert losses.shape == (5, 12)
    for b in range(5):
        alone = run_ttt(net, pixels[b], targets[b], seeds[b])
        torch.testing.assert_close(losses[b], torch.tensor(alone.losses), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(embeddings[b], alone.embedding, rtol=1e-4, atol=1e-5)


def test_each_slice_is_drawn_from_its_own_seed():
    net = ApmNet(SMALL, 32)
    batch = BatchedApm(net, [3, 4])
    net.reset_parameters(4)
    for name, param in net.named_parameters():
        if name in batch.params:
            assert torch.equal(batch.params[name][1], param), name


def test_a_diverging_sample_leaves_its_neighbours_alone():
    net = ApmNet(SMALL, 32)
    targets = torch.randn(3, 32)
    targets[1, 0] = float("inf")
    pixels = torch.randn(3, 3, 64, 64)
    embeddings, losses, _ = train_batched(net, pixels, targets, [1, 2, 3])
    assert not torch.isfinite(losses[1]).all()
    assert torch.isfinite(losses[[0, 2]]).all()
    torch.testing.assert_close(losses[2], torch.tensor(run_ttt(net, pixels[2], targets[2], 3).losses), rtol=1e-4, atol=1e-6)


def test_worker_rows_agree_between_batch_sizes():
    task = resolve_task("synthetic:1")
    rows = {}
    for size in (1, 6):
        config = RunConfig(tasks=("synthetic:1",), methods=("apm",), settings=(("apm", dataclasses.replace(SMALL, batch_size=size)),))
        worker = ShardWorker(config, {task.name: task}, RunIdentity("r", "f", "c"))
        rows[size] = worker.process(plan_shards([task], 12)[0]).to_pylist()
    for one, many in zip(rows[1], rows[6]):
        assert one["prediction"] == many["prediction"] and one["top5"] == many["top5"]
        assert many["losses"] == pytest.approx(one["losses"], rel=1e-4)


def test_auto_batch_size_fits_the_device_and_respects_the_flag():
    net = ApmNet(SMALL, 32)
    assert batch_size(SMALL, net, torch.device("cpu"), 40) == 16
    assert batch_size(SMALL, net, torch.device("cpu"), 3) == 3
    assert batch_size(dataclasses.replace(SMALL, batch_size=5), net, torch.device("cpu"), 40) == 5
    assert batch_size(dataclasses.replace(SMALL, rgb_weight=1.0), net, torch.device("cpu"), 40) == 1
    paper = ApmNet(ApmConfig(), 768)
    assert 1 <= batch_size(ApmConfig(), paper, torch.device("cpu"), 64) <= 16
