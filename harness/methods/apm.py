"""APM per-sample test-time training: re-initialise, distil the teacher's embedding of this one
image for N steps with a fresh Adam, classify the student's embedding, and forget everything."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from harness.config import ApmConfig, RunConfig
from harness.methods.base import METHODS, Outcome, SampleInput, score
from harness.models.apm import ApmNet
from harness.models.teacher import Teacher, autocast
from tasks.base import Task
from tasks.templates import SINGLE_TEMPLATE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, losses: tuple[float, ...] = ()) -> None:
        super().__init__(f"non-finite TTT loss at step {step}")
        self.step = step
        self.losses = losses
        """The trajectory up to and including the bad step, kept on the row for diagnosis."""


@dataclass(frozen=True)
class TTTResult:
    embedding: torch.Tensor
    """(D,) the student's embedding after training."""
    losses: tuple[float, ...]
    """Loss before each update, one per step."""
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    """Step k -> (G, D) per-location features of the image after k updates (on the CPU), for the steps
    asked for in `snapshot_steps`; empty otherwise. Figures use it (islands of agreement); scoring does not."""


def apm_transform(image_size: int) -> v2.Compose:
    """The student's view: the whole image squashed to S x S (no crop), ImageNet normalisation."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((image_size, image_size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def run_ttt(
    net: ApmNet,
    pixels: torch.Tensor,
    target: torch.Tensor,
    seed: int,
    precision: str = "fp32",
    snapshot_steps: Collection[int] = (),
) -> TTTResult:
    """Train `net` from a fresh draw on one image (3, S, S) towards `target` (D,).

    `snapshot_steps` (each 0..steps) asks for the per-location features after that many updates; taking
    them is a no-grad forward outside the training computation, so the trajectory is unchanged."""
    cfg = net.config
    device = pixels.device
    wanted = sorted(set(snapshot_steps))
    if wanted and (wanted[0] < 0 or wanted[-1] > cfg.steps):
        raise ValueError(f"snapshot steps {wanted} must lie in 0..{cfg.steps}")
    snapshots: dict[int, torch.Tensor] = {}

    def snapshot(step: int) -> None:
        if step in wanted:
            with torch.no_grad(), autocast(device, precision):
                snapshots[step] = net.features(pixels[None])[0].float().cpu()

    net.reset_parameters(torch.Generator(device=device).manual_seed(seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)  # fresh state for every sample
    batch = pixels[None].expand(cfg.copies, -1, -1, -1)
    goal = target.float()[None].expand(cfg.copies, -1)
    rgb_goal = net.rgb_target(batch) if cfg.rgb_weight else None
    losses = []
    snapshot(0)
    for step in range(cfg.steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            if rgb_goal is None:
                loss = F.mse_loss(net(batch).float(), goal)
            else:
                emb, rgb = net.forward_with_rgb(batch)
                loss = F.mse_loss(emb.float(), goal) + cfg.rgb_weight * F.mse_loss(rgb.float(), rgb_goal)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        snapshot(step + 1)
    with torch.no_grad(), autocast(device, precision):
        embedding = net(pixels[None])[0].float()
    trajectory = torch.stack(losses).cpu() if losses else torch.empty(0)  # one sync, not one per step
    bad = (~torch.isfinite(trajectory)).nonzero()
    if len(bad) or not torch.isfinite(embedding).all():
        step = int(bad[0]) if len(bad) else cfg.steps
        raise NonFiniteLoss(step, tuple(trajectory[: step + 1].tolist()))
    return TTTResult(embedding, tuple(trajectory.tolist()), snapshots)


@dataclass
class ApmMethod:
    config: ApmConfig
    name: str = "apm"
    _net: ApmNet | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.transform = apm_transform(self.config.image_size)

    def network(self, teacher: Teacher) -> ApmNet:
        """Built once per worker; its weights are redrawn before every sample, so reuse leaks nothing."""
        if self._net is None or self._net.out_dim != teacher.embed_dim:
            self._net = ApmNet(self.config, teacher.embed_dim).to(teacher.device)
        return self._net

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]:
        templates = (SINGLE_TEMPLATE,) if self.config.templates == "single" else task.templates
        classifier = teacher.classifier(task.classnames, templates)
        net = self.network(teacher)
        before = score(torch.stack([s.teacher_embedding for s in samples]), classifier, teacher.logit_scale)
        return [self._one(net, teacher, classifier, s, before.prediction[i], len(templates)) for i, s in enumerate(samples)]

    def _one(
        self, net: ApmNet, teacher: Teacher, classifier: torch.Tensor, sample: SampleInput, before: int, n_templates: int
    ) -> Outcome:
        start = time.perf_counter()
        pixels = self.transform(sample.image).to(teacher.device)
        try:
            result = run_ttt(net, pixels, sample.teacher_embedding, sample.seed, teacher.config.precision)
        except NonFiniteLoss as exc:
            return Outcome(None, prediction_before=before, n_templates=n_templates, steps=exc.step,
                           losses=exc.losses, seconds=sample.teacher_seconds + time.perf_counter() - start,
                           error=str(exc))
        scores = score(result.embedding[None], classifier, teacher.logit_scale)
        return Outcome(
            prediction=scores.prediction[0],
            top5=scores.top5[0],
            confidence=scores.confidence[0],
            prediction_before=before,
            n_templates=n_templates,
            steps=len(result.losses),
            losses=result.losses,
            seconds=sample.teacher_seconds + time.perf_counter() - start,
        )


def _apm(config: RunConfig) -> ApmMethod:
    return ApmMethod(config.apm)


METHODS.add("apm", _apm)
