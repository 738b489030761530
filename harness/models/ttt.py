"""The APM test-time training loop, one for the single and the batched network, under a named recipe
(harness/models/recipes.py), and the student's input transform."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from harness.models.recipes import RECIPES, Recipe
from harness.precision import autocast, grad_scaler

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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`steps` Adam updates from a fresh optimiser (and schedule, and loss scaler) on the summed
    losses of `batch` samples; each sample's parameters get only its own loss's gradient. Returns the
    (B, steps) loss trajectory on the CPU (loss before each update) and, for recipes that predict
    from it, the (B, D) embeddings of the last training forward (None otherwise)."""
    optimizer = torch.optim.Adam(parameters, lr=lr, fused=fused)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, *recipe.step_lr) if recipe.step_lr else None
    scaler = grad_scaler(device, precision)
    optimizer.zero_grad(set_to_none=True)
    losses: list[torch.Tensor] = []
    last: torch.Tensor | None = None
    for step in range(steps):
        if recipe.zero_grad_every_step:
            optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            per_sample, embeddings = forward()
        scaler.scale(per_sample.sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        if schedule is not None:
            schedule.step()
        losses.append(per_sample.detach().float())
        last = embeddings.detach().float()
        if after_update is not None:
            after_update(step + 1)
    trajectory = torch.stack(losses, dim=1).cpu() if losses else torch.empty(batch, 0)  # one sync, not one per step
    return trajectory, (last if recipe.predict_from_training_forward else None)
