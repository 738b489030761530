"""The two ways the APM test-time training loop is run, by name.

The paper describes the loop in words; the authors' released demo (rajatmodi62/apm, train_tta.py)
runs it differently in four ways. Both are kept, by name, so a user can measure the difference:
`--set apm.recipe=spec` (the default) or `--set apm.recipe=demo`. The recipe is part of the config, so it is
in the fingerprint and the manifest. Plain data: checking a name imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from harness.registry import Registry


@dataclass(frozen=True)
class Recipe:
    description: str
    zero_grad_every_step: bool
    """False: gradients are zeroed once per image and accumulate over the steps (the demo calls
    optimizer.zero_grad() before its iteration loop, not inside it)."""
    step_lr: tuple[int, float] | None
    """StepLR(step_size, gamma), stepped after every update; None: a constant learning rate."""
    pil_bilinear_resize: bool
    """True: the demo's torchvision Resize((S, S)) on the PIL image (PIL bilinear); False: a bicubic,
    antialiased resize of the decoded tensor (ours; the paper does not say)."""
    predict_from_training_forward: bool
    """True: the prediction is the embedding of the last training forward, computed before the last
    update (the demo classifies `feat_out` of its final iteration); False: one more forward after it."""


RECIPES: Registry[Recipe] = Registry("APM recipe (apm.recipe)")
RECIPES.add("spec", Recipe(
    "the paper: fresh Adam, zero_grad every step, no schedule, predict after the last update",
    zero_grad_every_step=True, step_lr=None, pil_bilinear_resize=False, predict_from_training_forward=False,
))
RECIPES.add("demo", Recipe(
    "the authors' demo: gradients accumulate, StepLR(200, 0.1), bilinear resize, predict from the last training forward",
    zero_grad_every_step=False, step_lr=(200, 0.1), pil_bilinear_resize=True, predict_from_training_forward=True,
))
