"""The two APM recipes, checked against their definitions: the paper's (spec) and the authors' demo
(train_tta.py: gradients zeroed once per image, StepLR(200, 0.1), bilinear resize of the PIL image,
prediction from the last training forward)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from harness.config import RunConfig
from harness.methods.configs import ApmConfig
from harness.methods.apm import apm_transform, run_ttt
from harness.models.apm import ApmNet
from harness.models.ttt import IMAGENET_MEAN, IMAGENET_STD, RECIPES, train_steps

CPU = torch.device("cpu")
TINY = ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=6, lr=1e-2)


def _constant_gradient_loop(recipe: str, steps: int, lr: float = 1e-4):
    """A parameter whose loss has gradient 1 everywhere: Adam then moves it by lr per step, and
    accumulation shows in .grad."""
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    seen = []

    def forward():
        return w.sum()[None], w.detach().clone()[None]

    trajectory, last, _ = train_steps([w], forward, 1, steps, lr, RECIPES.get(recipe), CPU, "fp32",
                                   after_update=lambda _: seen.append(w.detach().clone()))
    return w, trajectory, last, [torch.zeros(1, dtype=torch.float64)] + seen


def test_the_demo_accumulates_gradients_and_the_spec_zeroes_them_every_step():
    demo, *_ = _constant_gradient_loop("demo", 5)
    spec, *_ = _constant_gradient_loop("spec", 5)
    assert demo.grad.item() == 5.0  # 5 backward passes summed: zero_grad ran once, before the loop
    assert spec.grad.item() == 1.0


def test_the_demo_decays_the_learning_rate_tenfold_after_200_steps():
    def moves(recipe):  # Adam's step is about lr while the gradient keeps its sign
        *_, values = _constant_gradient_loop(recipe, 210)
        return (-torch.diff(torch.cat(values))).numpy()

    demo, spec = moves("demo"), moves("spec")
    assert demo[200:].mean() / demo[190:200].mean() == pytest.approx(0.1, rel=0.02)
    assert spec[200:] == pytest.approx(np.full(10, 1e-4), rel=1e-6)  # no schedule


def test_the_demo_predicts_from_the_last_training_forward():
    _, trajectory, last, values = _constant_gradient_loop("demo", 4)
    assert trajectory.shape == (1, 4)
    assert last[0].item() == pytest.approx(values[3].item(), rel=1e-6)  # before the 4th (last) update
    assert last[0].item() != pytest.approx(values[4].item(), rel=1e-6)
    _, _, none, _ = _constant_gradient_loop("spec", 4)
    assert none is None  # the spec runs one more forward after the last update


def test_run_ttt_under_the_demo_recipe_equals_the_demo_loop_written_out():
    config = dataclasses.replace(TINY, recipe="demo")
    net = ApmNet(config, 16)
    x, target = torch.randn(3, 32, 32), torch.randn(16)
    got = run_ttt(net, x, target, seed=5)
    net.reset_parameters(5)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=200, gamma=0.1)
    optimizer.zero_grad()
    losses = []
    for _ in range(config.steps):
        out = net(x[None])
        loss = F.mse_loss(out, target[None])
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert got.losses == pytest.approx(losses, rel=1e-5)
    torch.testing.assert_close(got.embedding, out[0].detach())
    spec = run_ttt(ApmNet(TINY, 16), x, target, seed=5)
    assert spec.losses[0] == pytest.approx(got.losses[0]) and spec.losses[-1] != pytest.approx(got.losses[-1])


def test_the_demo_resizes_the_pil_image_bilinearly_like_torchvision_resize():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    demo = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    torch.testing.assert_close(apm_transform(32, "demo")(image), demo, rtol=0, atol=1e-6)  # same pixels; /255 rounding
    assert not torch.allclose(apm_transform(32, "spec")(image), demo, atol=1e-3)  # ours: bicubic on the tensor


def test_the_recipe_is_in_the_fingerprint_and_an_unknown_one_is_named():
    base = RunConfig(tasks=("synthetic",), methods=("apm",))
    demo = dataclasses.replace(base, settings=(("apm", dataclasses.replace(base.settings_of("apm"), recipe="demo")),))
    assert base.settings_of("apm").recipe == "spec" and base.fingerprint() != demo.fingerprint()
    with pytest.raises(Exception, match="did you mean 'demo'"):
        RECIPES.get("dem")
