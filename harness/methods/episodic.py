"""What every view-based episodic method shares (TPT and the methods built on its protocol): TPT's
views of each sample, made ahead on the data threads (view_feed.py); their embeddings in chunks that
fit the device; confident-view selection; the cost per sample. A method adds `adapt`: from one
sample's view embeddings to its outcome. Nothing carries over from one sample to the next, so the
worker may run several view methods sample by sample from one feed of views."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.device import now
from harness.errors import HarnessError
from harness.methods.base import Outcome, SampleInput, final_scores, score
from harness.methods.view_feed import ViewFeed, ViewSpec, lookahead
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import SINGLE, SINGLE_TEMPLATE, TemplateSet

FINE_GRAINED_FAMILIES = frozenset(
    {"flowers102", "dtd", "oxford-pets", "ucf101", "caltech101", "food101", "sun397", "fgvc-aircraft", "eurosat",
     "stanford-cars"}
)
"""TPT's code adds AugMix on these (its multi-letter set ids) and not on the ImageNet variants."""
IMAGENET_FAMILY = frozenset({"imagenet", "imagenet-a", "imagenet-v2", "imagenet-r", "imagenet-sketch", "imagenet-c"})
"""ImageNet's classes: the sets TTA-VLM's one-letter ids stand for (I, A, V, R, K), and ImageNet-C."""


def task_family(task: Task) -> str:
    """`imagenet-c/fog/5` -> imagenet-c; `oxford-pets:/data/pets` -> oxford-pets."""
    return task.name.split(":")[0].split("/")[0]


def normalisation(preprocess: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The teacher's mean and std, read off its own eval transform."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return tuple(t.mean), tuple(t.std)
    raise HarnessError("view-based methods need a teacher whose preprocessing ends in Normalize")


def view_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Each view's entropy of its softmax over the classes."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def confident_views(logits: torch.Tensor, top: float) -> torch.Tensor:
    """Indices of the int(N * top) lowest-entropy views (at least one; a stable sort, so ties keep
    view order), as TPT's select_confident_samples. View 0 has no privilege."""
    keep = max(1, int(logits.shape[0] * top))
    return view_entropy(logits.detach()).argsort(stable=True)[:keep]


def prompt_templates(ctx_init: str) -> TemplateSet:
    """The hand-written prompt "<ctx_init> {}." as a template set (the single template by default)."""
    template = f"{ctx_init} {{}}."
    return SINGLE if template == SINGLE_TEMPLATE else TemplateSet(f"prompt:{ctx_init}", (template,))


@dataclass(frozen=True)
class ShardStart:
    """What a view method settles for a shard before its first sample."""

    spec: ViewSpec
    """The views it asks the feed for."""
    before: list[int]
    """Every sample's prediction with the untuned classifier, scored as one batch."""
    flops: int


@dataclass
class ViewMethod:
    """Base of the view-based methods; `config` is a ViewsConfig (views, augmix, min_scale)."""

    config: Any
    name: str = "views"
    data_pool: Executor | None = field(default=None, repr=False)
    """Threads that make the next samples' views when the method runs on its own (`evaluate`); in a
    worker the views come from the worker's feed, shared by all its view methods."""
    flop_teacher: Teacher | None = field(default=None, repr=False)
    """The teacher FLOPs are counted on: the worker's twin of its teacher on the meta device, so the
    real device never runs the counting pass (attention by its slow math kernel, GBs of activations).
    None: the teacher the method runs with."""
    _view_chunk: int | None = field(default=None, repr=False)
    """Views encoded at once, once out of memory has taught this worker a limit (None: all)."""
    _flops: dict[tuple, int] = field(default_factory=dict, repr=False)
    AUGMIX_AUTO: ClassVar[frozenset[str]] = FINE_GRAINED_FAMILIES
    """The task families `augmix = auto` turns AugMix on for (TPT's rule, unless a method's authors differ)."""

    def uses_augmix(self, task: Task) -> bool:
        if self.config.augmix == "auto":
            return task_family(task) in self.AUGMIX_AUTO
        return self.config.augmix == "on"

    def templates(self, task: Task) -> TemplateSet:
        """The prompt the "before" prediction and the untuned classifier use."""
        return prompt_templates(self.config.ctx_init)

    def view_spec(self, teacher: Teacher, task: Task) -> ViewSpec:
        """The augmented views this method takes of every sample of `task` (their seed is the sample's)."""
        mean, std = normalisation(teacher.preprocess)
        return ViewSpec(self.config.views - 1, teacher.input_size, mean, std, self.uses_augmix(task),
                        self.config.min_scale)

    def adapt(self, teacher: Teacher, task: Task, features: torch.Tensor, sample: SampleInput) -> Outcome:
        """features: (views, D) normalised embeddings, view 0 the teacher's own preprocessing."""
        raise NotImplementedError

    def adapt_views(self, teacher: Teacher, task: Task, sample: SampleInput, views: torch.Tensor) -> Outcome:
        """From the augmented views' pixels (views - 1, 3, S, S) to the outcome; by default their
        embeddings, view 0's the teacher's own, go to `adapt`. A method that needs the pixels (it
        re-encodes them, or shows them to another model) overrides this."""
        features = F.normalize(torch.cat([sample.teacher_embedding[None], self.encode(teacher, views)]), dim=-1)
        return self.adapt(teacher, task, features, sample)

    def adapt_flops(self, teacher: Teacher, task: Task) -> int:
        """FLOPs per sample beyond the views' image forwards (counted, on the meta device too)."""
        return 0

    def cost_key(self, task: Task) -> tuple:
        """What of a task the cost per sample depends on: its classes, and whatever else a method
        settles per task (RLCF's steps per task family)."""
        return (task.classnames,)

    def flops(self, teacher: Teacher, task: Task) -> int:
        """Per sample: every view through the image tower (view 0 is the shared teacher forward) and
        what `adapt` adds. Counted once per cost key."""
        key = (id(teacher), *self.cost_key(task))
        if key not in self._flops:
            self._flops[key] = self.config.views * teacher.image_flops + self.adapt_flops(teacher, task)
        return self._flops[key]

    def begin(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> ShardStart:
        """The shard's spec, "before" predictions and FLOPs per sample (counted on `flop_teacher`)."""
        initial = teacher.classifier(task.classnames, self.templates(task))
        before = score(torch.stack([s.teacher_embedding for s in samples]), initial, teacher.logit_scale).prediction
        return ShardStart(self.view_spec(teacher, task), before, self.flops(self.flop_teacher or teacher, task))

    def run_sample(self, teacher: Teacher, task: Task, start: ShardStart, feed: ViewFeed, index: int) -> Outcome:
        """The outcome of feed.samples[index]. Its seconds are the teacher's share, this method's own
        work, and the wait for the sample's views if they are not made yet: in a worker whose view
        methods share a feed, the first of them (in the run's method order) to ask for a sample's
        views waits for them, the others find them made."""
        sample = feed.samples[index]
        clock = now(teacher.device)
        views = feed.views(index, start.spec)
        outcome = self.adapt_views(teacher, task, sample, views)
        seconds = sample.teacher_seconds + now(teacher.device) - clock
        return dataclasses.replace(outcome, prediction_before=start.before[index], flops=start.flops, seconds=seconds)

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]:
        """This method alone: samples one after another, the next ones' views made on `data_pool`
        meanwhile (as a worker with one data thread makes them)."""
        start = self.begin(teacher, task, samples)
        feed = ViewFeed(samples, [start.spec], self.data_pool, lookahead(1, start.spec.nbytes),
                        pin=teacher.device.type == "cuda")
        return [self.run_sample(teacher, task, start, feed, i) for i in range(len(samples))]

    def encode(self, teacher: Teacher, views: torch.Tensor) -> torch.Tensor:
        """The views' embeddings, in chunks that fit the device: out of memory halves the chunk (and it
        stays halved for this worker); only views that do not fit one at a time fail the shard."""
        while True:
            chunk = self._view_chunk or len(views)
            try:
                return torch.cat([teacher.encode_images(views[i : i + chunk]) for i in range(0, len(views), chunk)])
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                self._view_chunk = chunk // 2
                torch.cuda.empty_cache()


def tuned_outcome(name: str, logits: torch.Tensor, losses: list[float], scale: float, **extra: Any) -> Outcome:
    """The outcome of a method that trained for len(losses) steps: scored, or an error row when a loss or
    a score is not finite (the sample, not the worker, went wrong)."""
    extra.update(steps=len(losses), losses=tuple(losses))
    if not (all(math.isfinite(v) for v in losses) and bool(torch.isfinite(logits).all())):
        return Outcome(None, error=f"non-finite {name} loss", **extra)
    return scored(logits, scale, **extra)


def scored(logits: torch.Tensor, scale: float, **extra: Any) -> Outcome:
    """An outcome from one row of final logits at the teacher's `scale` (fp32): top-1, top-5, and the
    softmax confidence, MSP and MCM score (base.final_scores)."""
    logits = logits.float()
    k = min(5, logits.shape[-1])
    top = logits.topk(k).indices.tolist()
    return Outcome(prediction=top[0], top5=tuple(top), **final_scores(logits, scale, top[0]), **extra)
