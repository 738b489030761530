"""The APM test-time training loop, one for the single and the batched network, under a named recipe
(harness/models/recipes.py), and the student's input transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torchvision.transforms import v2

from harness.models.loss_scale import SampleScales
from harness.models.recipes import RECIPES, Recipe
from harness.models.sample_adam import SampleAdam
from harness.precision import autocast, loss_scaling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def apm_transform(image_size: int, recipe: str = "spec") -> v2.Compose:
    """The student's view: the whole image squashed to S x S (no crop), ImageNet normalisation."""
    size = (image_size, image_size)
    if RECIPES.get(recipe).pil_bilinear_resize:
        resize = [v2.Resize(size, interpolation=v2.InterpolationMode.BILINEAR), v2.PILToTensor()]
    else:
        resize = [v2.PILToTensor(), v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    return v2.Compose([*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


StepForward = Callable[[], tuple[torch.Tensor, torch.Tensor]]
"""One training forward: (per-sample losses (B,), per-sample embeddings (B, D))."""


class Trained(NamedTuple):
    losses: torch.Tensor
    """(B, steps) on the CPU: the loss before each update (or skipped update)."""
    last: torch.Tensor | None
    """(B, D) embeddings of the last training forward, for recipes that predict from it; else None."""
    updates: torch.Tensor
    """(B,) on the CPU: updates applied; fewer than `steps` where fp16 loss scaling skipped a step."""


def train_steps(
    parameters: list[torch.Tensor],
    forward: StepForward,
    batch: int,
    steps: int,
    lr: float,
    recipe: Recipe,
    device: torch.device,
    precision: str,
    fused: bool = False,
    after_update: Callable[[int], None] | None = None,
    scaled: bool | None = None,
) -> Trained:
    """`steps` Adam updates from a fresh optimiser (and schedule, and loss scales) on the summed
    losses of `batch` samples; each sample's parameters get only its own loss's gradient.

    With loss scaling (`scaled`; by default fp16 on CUDA, where autocast makes fp16 gradients) every
    sample has its own scale and skips its own overflowing steps, with Adam's state per sample
    (loss_scale.py, sample_adam.py), so a sample's result never depends on its batchmates. `scaled`
    forces it either way: on a CPU, where autocast is off, tests exercise the scaling in fp32. fp32
    and bf16 use torch's Adam (`fused` over stacked tensors) and no scaler."""
    scales = SampleScales(batch, device) if (scaled if scaled is not None else loss_scaling(device, precision)) else None
    optimizer = SampleAdam(parameters, batch, lr) if scales is not None else torch.optim.Adam(parameters, lr=lr, fused=fused)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, *recipe.step_lr) if recipe.step_lr else None
    skips = torch.zeros(batch, dtype=torch.int64, device=device)
    optimizer.zero_grad(set_to_none=True)
    losses: list[torch.Tensor] = []
    last: torch.Tensor | None = None
    for step in range(steps):
        if recipe.zero_grad_every_step:
            optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            per_sample, embeddings = forward()
        if scales is None:
            per_sample.sum().backward()
            optimizer.step()
        else:
            scales.scaled_sum(per_sample).backward()
            skipped = scales.unscale_(parameters)
            optimizer.step(~skipped)
            scales.update(skipped)
            skips += skipped
        if schedule is not None:
            schedule.step()  # every iteration, skipped or not, as for one sample with its own GradScaler
        losses.append(per_sample.detach().float())
        last = embeddings.detach().float()
        if after_update is not None:
            after_update(step + 1)
    trajectory = torch.stack(losses, dim=1).cpu() if losses else torch.empty(batch, 0)  # one sync, not one per step
    return Trained(trajectory, last if recipe.predict_from_training_forward else None, steps - skips.cpu())
