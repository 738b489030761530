"""APM per-sample test-time training: re-initialise, distil the teacher's embedding of this one
image for N steps with a fresh Adam, classify the student's embedding, and forget everything."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Executor
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.methods.configs import ApmConfig
from harness.device import now
from harness.flops import count_flops
from harness.methods.apm_inputs import GroupInputs
from harness.methods.base import Outcome, SampleInput, score
from harness.models.apm import ApmNet
from harness.models.apm_batched import train_batched
from harness.models.apm_init import Draws
from harness.models.teacher import Teacher
from harness.models.ttt import RECIPES, apm_transform, train_steps
from harness.precision import autocast
from tasks.base import Task
from tasks.templates import SINGLE, TemplateSet

__all__ = ["ApmMethod", "NonFiniteLoss", "TTTResult", "apm", "apm_transform", "batch_size", "run_ttt"]


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, losses: tuple[float, ...] = ()) -> None:
        super().__init__(f"non-finite TTT loss at step {step}")
        self.step = step
        self.losses = losses
        """The trajectory up to and including the bad step, kept on the row for diagnosis."""


@dataclass(frozen=True)
class TTTResult:
    embedding: torch.Tensor
    """(D,) the student's embedding the prediction is made from."""
    losses: tuple[float, ...]
    """Loss before each update, one per step."""
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    """Step k -> (G, D) per-location features of the image after k updates (on the CPU), for the steps
    asked for in `snapshot_steps`; empty otherwise. Figures use it (islands of agreement); scoring does not."""
    skipped: int = 0
    """Steps whose update fp16 loss scaling skipped (the gradient overflowed at this sample's own
    scale); its row's ttt_steps counts only the updates applied."""


def run_ttt(
    net: ApmNet,
    pixels: torch.Tensor,
    target: torch.Tensor,
    seed: int,
    precision: str = "fp32",
    snapshot_steps: Collection[int] = (),
    drawn: Draws | None = None,
    scaled: bool | None = None,
) -> TTTResult:
    """Train `net` from a fresh draw on one image (3, S, S) towards `target` (D,), by its config's recipe.

    `snapshot_steps` (each 0..steps) asks for the per-location features after that many updates; taking
    them is a no-grad forward outside the training computation, so the trajectory is unchanged.
    `drawn`: the seed's draws made ahead (`net.draw_plan(False)`); `scaled`: loss scaling, by default
    fp16 on CUDA (ttt.train_steps)."""
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

    net.reset_parameters(seed, drawn)
    batch = pixels[None].expand(cfg.copies, -1, -1, -1)
    goal = target.float()[None].expand(cfg.copies, -1)
    rgb_goal = net.rgb_target(batch) if cfg.rgb_weight else None

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        if rgb_goal is None:
            emb = net(batch)
            loss = F.mse_loss(emb.float(), goal)
        else:
            emb, rgb = net.forward_with_rgb(batch)
            loss = F.mse_loss(emb.float(), goal) + cfg.rgb_weight * F.mse_loss(rgb.float(), rgb_goal)
        return loss[None], emb[:1]

    snapshot(0)
    trained = train_steps(list(net.parameters()), forward, 1, cfg.steps, cfg.lr, RECIPES.get(cfg.recipe),
                          device, precision, after_update=snapshot, scaled=scaled)
    if trained.last is not None:
        embedding = trained.last[0]
    else:
        with torch.no_grad(), autocast(device, precision):
            embedding = net(pixels[None])[0].float()
    result = checked(embedding, trained.losses[0], int(trained.updates[0]))
    if isinstance(result, NonFiniteLoss):
        raise result
    return dataclasses.replace(result, snapshots=snapshots)


def checked(embedding: torch.Tensor, trajectory: torch.Tensor, updates: int | None = None) -> TTTResult | NonFiniteLoss:
    """A sample's verdict: its embedding, (steps,) losses and skipped steps (`updates` applied, all
    when None), or the first step that went non-finite."""
    bad = (~torch.isfinite(trajectory)).nonzero()
    if len(bad) or not torch.isfinite(embedding).all():
        step = int(bad[0]) if len(bad) else len(trajectory)
        return NonFiniteLoss(step, tuple(trajectory[: step + 1].tolist()))
    skipped = 0 if updates is None else len(trajectory) - updates
    return TTTResult(embedding, tuple(trajectory.tolist()), skipped=skipped)


@dataclass
class ApmMethod:
    config: ApmConfig
    name: str = "apm"
    _net: ApmNet | None = field(default=None, repr=False)
    _flops: dict[tuple, int] = field(default_factory=dict, repr=False)
    _size_cap: int | None = field(default=None, repr=False)
    """The group size out-of-memory taught this worker (None: not limited)."""
    data_pool: Executor | None = field(default=None, repr=False)
    """The worker's data threads: they make the input views and draw the initial weights, a group
    ahead (apm_inputs.py); without them both happen on the compute thread, with the same results."""
    flop_teacher: Teacher | None = field(default=None, repr=False)
    """The teacher FLOPs are counted on (the worker's meta-device twin, with a network of its own
    there), so the real device never runs the counting pass; None: the one it runs with."""

    def __post_init__(self) -> None:
        RECIPES.get(self.config.recipe)  # an unknown recipe fails before any sample
        self.transform = apm_transform(self.config.image_size, self.config.recipe)

    def network(self, teacher: Teacher) -> ApmNet:
        """Built once per worker; its weights are redrawn before every sample, so reuse leaks nothing."""
        if self._net is None or self._net.out_dim != teacher.embed_dim:
            self._net = ApmNet(self.config, teacher.embed_dim).to(teacher.device)
        return self._net

    def flops(self, teacher: Teacher, task: Task) -> int:
        """Per sample, trained in a batch (where identical copies cost nothing)."""
        return self._flops_of(self.network(teacher), teacher, 1)

    def _flops_of(self, net: ApmNet, teacher: Teacher, copies: int) -> int:
        """Per sample: the teacher's forward, `steps` training steps (forward and backward on
        `copies` images) and, unless the recipe predicts from the last training forward, the final
        forward. Counted once per network on a blank image."""
        key = (net.out_dim, copies)
        if key not in self._flops:
            if self.flop_teacher is not None:
                teacher, net = self.flop_teacher, ApmNet(self.config, net.out_dim).to(self.flop_teacher.device)
            side = self.config.image_size
            image = torch.zeros(copies, 3, side, side, device=teacher.device)
            target = torch.zeros(copies, net.out_dim, device=teacher.device)
            step = count_flops(lambda: F.mse_loss(net(image), target).backward())
            net.zero_grad(set_to_none=True)
            final = 0
            if not RECIPES.get(self.config.recipe).predict_from_training_forward:
                final = count_flops(lambda: net(image[:1]))  # with grad on: the counter's hooks need it
            self._flops[key] = teacher.image_flops + self.config.steps * step + final
        return self._flops[key]

    def templates(self, task: Task) -> TemplateSet:
        return SINGLE if self.config.templates == "single" else task.templates

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]:
        """Train the samples' APMs in groups that fit the device. Out of memory is a property of the
        group, not of its samples: the group size halves (and stays halved for this worker) and the
        group is trained again; only a single sample that does not fit fails the shard. With data
        threads, the next group's views and initial weights are made on them while a group trains."""
        templates = self.templates(task)
        classifier = teacher.classifier(task.classnames, templates)
        net = self.network(teacher)
        before = score(torch.stack([s.teacher_embedding for s in samples]), classifier, teacher.logit_scale).prediction
        size = min(self._size_cap or len(samples), batch_size(self.config, net, teacher.device, len(samples)))
        outcomes: list[Outcome] = []
        start = 0
        inputs = self._inputs(net, samples[start : start + size], teacher.device, size > 1)
        while start < len(samples):
            group = inputs.group
            following = samples[start + size : start + 2 * size]
            ahead = self._inputs(net, following, teacher.device, size > 1) if following else None
            clock = now(teacher.device)
            try:
                results = self._train_group(net, inputs, teacher, batched=size > 1)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                if ahead is not None:
                    ahead.cancel()
                size = self._size_cap = size // 2
                torch.cuda.empty_cache()
                inputs = self._inputs(net, samples[start : start + size], teacher.device, size > 1)  # drawn again
                continue
            share = (now(teacher.device) - clock) / len(group)
            flops = self._flops_of(net, teacher, 1 if size > 1 else self.config.copies)  # batches skip the copies
            for i, (sample, result) in enumerate(zip(group, results)):
                outcome = self._outcome(result, classifier, teacher, before[start + i], sample.teacher_seconds + share)
                outcomes.append(dataclasses.replace(outcome, flops=flops, n_templates=len(templates),
                                                    template_set=templates.name, batch=len(group)))
            start += len(group)
            if ahead is not None:
                inputs = ahead
        return outcomes

    def _inputs(self, net: ApmNet, group: Sequence[SampleInput], device: torch.device, batched: bool) -> GroupInputs:
        """Made on the data threads when the worker gave us some (pinned for a copy to CUDA)."""
        return GroupInputs(group, self.transform, net.draw_plan(batched), self.data_pool, pin=device.type == "cuda")

    def _train_group(self, net: ApmNet, inputs: GroupInputs, teacher: Teacher,
                     batched: bool) -> list[TTTResult | NonFiniteLoss]:
        group = inputs.group
        pixels = inputs.pixels(teacher.device)
        drawn = inputs.draws()
        precision = teacher.config.precision
        if not batched:
            return [self._train_one(net, pixels[0], group[0], precision, drawn)]
        trained = train_batched(net, pixels, torch.stack([s.teacher_embedding for s in group]),
                                [s.seed for s in group], precision, drawn)  # positional: tests wrap train_batched
        return [checked(trained.embeddings[i], trained.losses[i], int(trained.updates[i])) for i in range(len(group))]

    @staticmethod
    def _train_one(net: ApmNet, pixels: torch.Tensor, sample: SampleInput, precision: str,
                   drawn: Draws | None) -> TTTResult | NonFiniteLoss:
        try:
            return run_ttt(net, pixels, sample.teacher_embedding, sample.seed, precision, drawn=drawn)
        except NonFiniteLoss as exc:
            return exc

    @staticmethod
    def _outcome(
        result: TTTResult | NonFiniteLoss, classifier: torch.Tensor, teacher: Teacher, before: int, seconds: float,
    ) -> Outcome:
        if isinstance(result, NonFiniteLoss):
            return Outcome(None, prediction_before=before, steps=result.step, losses=result.losses, seconds=seconds,
                           error=str(result))
        scores = score(result.embedding[None], classifier, teacher.logit_scale)
        return Outcome(
            prediction=scores.prediction[0],
            top5=scores.top5[0],
            confidence=scores.confidence[0],
            msp=scores.confidence[0],
            mcm=scores.mcm[0],
            prediction_before=before,
            steps=len(result.losses) - result.skipped,
            losses=result.losses,
            seconds=seconds,
        )


def batch_size(config: ApmConfig, net: ApmNet, device: torch.device, available: int) -> int:
    """Samples trained together. apm.batch_size wins; 0 picks as many as fit a memory budget
    (60% of free GPU memory, or a quarter of RAM on a CPU, at most 16 there), counting parameters
    with gradient and Adam state plus the activations one sample keeps for backward. The RGB head is
    trained one sample at a time."""
    if config.rgb_weight:
        return 1
    if config.batch_size:
        return max(1, min(config.batch_size, available))
    if device.type == "cuda":
        budget, cap = int(0.6 * torch.cuda.mem_get_info(device)[0]), available
    else:
        budget, cap = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4, 16
    return max(1, min(available, cap, budget // sample_bytes(config, net)))


def sample_bytes(config: ApmConfig, net: ApmNet) -> int:
    """The device memory one sample of a batch is estimated to take (fp32): its parameters with their
    gradients and Adam's two moments, and the activations it keeps for backward (bench/gpu_check.py
    measures the real figure against this)."""
    locations = config.chunk_size or net.locations
    widths = sum(config.hidden) + net.out_dim
    return 4 * (4 * net.num_parameters() + 3 * net.locations * net.out_dim + 2 * locations * widths)


def apm(settings: ApmConfig) -> ApmMethod:
    return ApmMethod(settings)
