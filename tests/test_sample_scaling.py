"""fp16 loss scaling per sample: in a batch of APMs each sample scales its loss, skips its overflowing
steps and keeps its Adam state as it would trained alone with its own torch GradScaler. Autocast is
off on a CPU, so these run the scaling in fp32 (`scaled=True`) against torch's own GradScaler("cpu")."""

import dataclasses
import functools

import pytest
import torch

from harness.methods import apm as apm_module
from harness.methods.apm import NonFiniteLoss, checked, run_ttt
from harness.methods.configs import ApmConfig
from harness.models import ttt
from harness.models.apm import ApmNet
from harness.models.apm_batched import train_batched
from harness.models.loss_scale import SampleScales
from harness.models.sample_adam import SampleAdam
from harness.precision import GRAD_SCALER_INIT, loss_scaling

SMALL = ApmConfig(image_size=64, patch_size=8, hidden=(128, 64), steps=12, lr=1e-3)
HUGE_SCALE = 2.0**122
"""An init scale at which the first steps overflow even in fp32, so skips happen on a CPU."""


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # torch's, for a first step skipped
def test_sample_adam_is_torch_adam_per_sample_with_steps_skipped_one_sample_at_a_time():
    torch.manual_seed(0)
    start = torch.randn(3, 40, 7)
    stacked = start.clone().requires_grad_()
    optimizer = SampleAdam([stacked], 3, lr=1e-2)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 5, 0.1)
    alone = [start[b].clone().requires_grad_() for b in range(3)]
    references = [torch.optim.Adam([p], lr=1e-2) for p in alone]
    reference_schedules = [torch.optim.lr_scheduler.StepLR(o, 5, 0.1) for o in references]
    for step in range(17):
        grad = torch.randn(3, 40, 7)
        grad[1] = float("inf") if step % 3 == 0 else grad[1]  # sample 1 skips every third step
        active = torch.tensor([True, step % 3 != 0, True])
        stacked.grad = grad.clone()
        optimizer.step(active)
        schedule.step()
        for b in range(3):
            if active[b]:
                alone[b].grad = grad[b].clone()
                references[b].step()
            reference_schedules[b].step()
    for b in range(3):
        torch.testing.assert_close(stacked[b], alone[b], rtol=1e-6, atol=1e-8)
        assert torch.equal(optimizer.state[stacked]["exp_avg"][b], references[b].state[alone[b]]["exp_avg"])
    assert optimizer.state[stacked]["step"].tolist() == [17, 11, 17]


def _toy_run(weights: torch.Tensor, inputs: torch.Tensor, steps: int, init_scale: float):
    """loss_b = mean((w_b * x_b)^2) trained with per-sample scales and SampleAdam, all B at once."""
    w = weights.clone().requires_grad_()
    scales = SampleScales(len(w), torch.device("cpu"), init_scale=init_scale)
    optimizer = SampleAdam([w], len(w), lr=1e-2)
    skipped = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        scales.scaled_sum((w * inputs).pow(2).mean(dim=1)).backward()
        found = scales.unscale_([w])
        optimizer.step(~found)
        scales.update(found)
        skipped.append(found.clone())
    return w.detach(), torch.stack(skipped, dim=1), scales.scale


def _toy_alone(weight: torch.Tensor, x: torch.Tensor, steps: int, init_scale: float):
    """The same sample alone, with torch's GradScaler and Adam."""
    w = weight.clone().requires_grad_()
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    optimizer = torch.optim.Adam([w], lr=1e-2)
    skipped = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale((w * x).pow(2).mean()).backward()
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped.append(scaler.get_scale() < before)
    return w.detach(), skipped, scaler.get_scale()


def test_each_sample_has_the_scale_and_skips_of_its_own_grad_scaler():
    torch.manual_seed(1)
    weights, inputs = torch.randn(3, 50), torch.randn(3, 50)
    inputs[1] *= 1e6  # overflows at the huge scale for several steps; its neighbours do not
    got, skipped, scale = _toy_run(weights, inputs, 20, HUGE_SCALE)
    counts = skipped.sum(dim=1).tolist()
    assert counts[1] > counts[0] and counts[1] > counts[2]
    for b in range(3):
        alone, alone_skipped, alone_scale = _toy_alone(weights[b], inputs[b], 20, HUGE_SCALE)
        assert skipped[b].tolist() == alone_skipped and scale[b].item() == alone_scale
        torch.testing.assert_close(got[b], alone, rtol=1e-6, atol=1e-7)


def test_the_scale_grows_after_its_interval_and_backs_off_per_sample():
    scales = SampleScales(2, torch.device("cpu"), growth_interval=3)
    for found in ([False, True], [False, False], [False, False]):
        scales.update(torch.tensor(found))
    assert scales.scale.tolist() == [2 * GRAD_SCALER_INIT, GRAD_SCALER_INIT / 2]
    assert scales.growth_tracker.tolist() == [0, 2]


@pytest.mark.parametrize("recipe", ["spec", "demo"])
def test_an_overflowing_sample_leaves_its_batchmates_alone(recipe):
    """An infinite target overflows every step of its sample (one shared scaler would have skipped
    every batchmate's step too); the others train exactly as without it, and its row says so."""
    config = dataclasses.replace(SMALL, recipe=recipe)
    net = ApmNet(config, 32)
    torch.manual_seed(2)
    pixels, targets, seeds = torch.randn(3, 3, 64, 64), torch.randn(3, 32), [4, 5, 6]
    targets[1, 0] = float("inf")
    with_it = train_batched(net, pixels, targets, seeds, scaled=True)
    without = train_batched(net, pixels[[0, 2]], targets[[0, 2]], [4, 6], scaled=True)
    torch.testing.assert_close(with_it.losses[[0, 2]], without.losses, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(with_it.embeddings[[0, 2]], without.embeddings, rtol=1e-5, atol=1e-6)
    assert (with_it.losses[[0, 2], -1] < 0.95 * with_it.losses[[0, 2], 0]).all()  # trained, not held flat
    assert with_it.updates.tolist() == [12, 0, 12]
    bad = checked(with_it.embeddings[1], with_it.losses[1], int(with_it.updates[1]))
    assert isinstance(bad, NonFiniteLoss) and bad.step == 0


def test_partly_skipped_samples_equal_their_own_runs_and_count_their_skips(monkeypatch):
    monkeypatch.setattr(ttt, "SampleScales", functools.partial(SampleScales, init_scale=HUGE_SCALE))
    net = ApmNet(SMALL, 32)
    torch.manual_seed(3)
    pixels, targets, seeds = torch.randn(3, 3, 64, 64), torch.randn(3, 32), [7, 8, 9]
    targets[1] *= 1e4  # a larger gradient: more steps overflow before its scale has backed off
    batch = train_batched(net, pixels, targets, seeds, scaled=True)
    skipped = (SMALL.steps - batch.updates).tolist()
    assert skipped[0] == skipped[2] == 0 < skipped[1] < SMALL.steps
    for b in range(3):
        alone = run_ttt(net, pixels[b], targets[b], seeds[b], scaled=True)
        assert alone.skipped == skipped[b]
        torch.testing.assert_close(batch.losses[b], torch.tensor(alone.losses), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batch.embeddings[b], alone.embedding, rtol=1e-4, atol=1e-5)
    result = checked(batch.embeddings[1], batch.losses[1], int(batch.updates[1]))
    outcome = apm_module.ApmMethod._outcome(result, torch.eye(32)[:, :8], _Teacher(), 0, 0.0)
    assert outcome.steps == SMALL.steps - skipped[1] and len(outcome.losses) == SMALL.steps and outcome.error is None


@dataclasses.dataclass(frozen=True)
class _Teacher:
    logit_scale: float = 100.0


def test_fp32_and_bf16_keep_torch_adam_without_a_scaler():
    """Off CUDA, and on it for fp32/bf16, no loss scaling: the result is the plain loop's, bit for bit."""
    net = ApmNet(SMALL, 32)
    pixels, targets = torch.randn(2, 3, 64, 64), torch.randn(2, 32)
    plain = train_batched(net, pixels, targets, [1, 2], "fp32")
    for precision in ("bf16", "fp16"):  # on a CPU autocast and scaling are off whatever is asked
        same = train_batched(net, pixels, targets, [1, 2], precision)
        assert torch.equal(same.losses, plain.losses) and torch.equal(same.embeddings, plain.embeddings)
    assert loss_scaling(torch.device("cuda"), "fp16") and not loss_scaling(torch.device("cuda"), "bf16")
