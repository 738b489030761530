"""The online method protocol: a method that carries state from one test image to the next and is never
reset within a stream (TDA's caches, DMN's memory, OnZeta's proxies, ECALP's graph). The stream engine
feeds it one sample at a time, in the stream's order, and checkpoints its state between segments, so
the state must be a flat dict of tensors (saved with safetensors: no pickle, nothing executable), and
everything a method remembers must be in it: two methods built from the same config, given the same
state, must give the same outcome and the same next state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from harness.methods.base import Outcome
from harness.methods.episodic import normalisation
from harness.methods.view_feed import ViewSpec
from harness.models.teacher import Teacher
from tasks.base import SampleRef, Task
from tasks.templates import SINGLE, TemplateSet

State = dict[str, torch.Tensor]
"""A method's memory between samples: names -> tensors (numbers as 0-d tensors), on the teacher's
device while the stream runs, moved to the CPU for a checkpoint."""


@dataclass(frozen=True)
class StreamSample:
    """One image of a stream, as an online method sees it."""

    ref: SampleRef
    position: int
    """Its place in the stream (0 first), across the tasks of a continual stream."""
    embedding: torch.Tensor
    """(D,) the teacher's projected, unnormalised image embedding, on the teacher's device."""
    seed: int
    """derive_seed(stream seed, task, sample id): the only randomness a method may use for this sample."""
    views: torch.Tensor | None = None
    """(views, D) normalised embeddings of the sample's views, view 0 the teacher's own, for a method
    with a `view_spec` (TPT's views, made from the run's per-sample seed: the views every view method of
    the run sees, the same in every stream); None for a method without one."""


class OnlineMethod(Protocol):
    name: str

    def templates(self, task: Task) -> TemplateSet | None:
        """The prompts of the text classifier it starts from (shared with the other methods' classifiers)."""
        ...

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """FLOPs per sample, the teacher's image forward included, averaged over a stream of `length`
        samples (a graph that grows with the stream costs more late than early)."""
        ...

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """The state before the first sample of a stream of `length` samples (OnZeta's schedule needs it)."""
        ...

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Classify `sample` and update `state` in place (the authors' order of the two, documented per
        method). The outcome's `prediction_before` is the zero-shot prediction of the same classifier."""
        ...

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """The most bytes the state can hold on a stream of `length` samples (documented per method)."""
        ...


def is_online(method: object) -> bool:
    """Whether a built method is an online one (it steps a state) rather than an episodic one."""
    return callable(getattr(method, "step", None)) and callable(getattr(method, "begin", None))


@dataclass(kw_only=True)
class OnlineBase:
    """What the training-free online methods share: the single prompt of TTA-VLM's protocol by default,
    and zero-shot logits at the teacher's scale, in fp32 whatever the teacher's precision."""

    name: str = ""

    def templates(self, task: Task) -> TemplateSet:
        return SINGLE

    def text(self, teacher: Teacher, task: Task) -> torch.Tensor:
        """(D, C) the normalised class embeddings (built once per worker, shared with other methods)."""
        return teacher.classifier(task.classnames, self.templates(task)).float()

    @staticmethod
    def unit(sample: StreamSample) -> torch.Tensor:
        """(D,) the sample's embedding, normalised, fp32."""
        return F.normalize(sample.embedding.float(), dim=-1)

    @staticmethod
    def zero_shot(f: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(C,) the zero-shot logits s * f.W of a unit embedding f (D,) against the text classifier W
        (D, C) at the logit scale s: a 2-D matrix product, which torch's FLOP counter counts."""
        return scale * (f[None, :] @ text)[0]


def tpt_views(teacher: Teacher, views: int, augmix: bool, min_scale: float) -> ViewSpec | None:
    """The spec of TPT's views of every image for an online method (episodic.ViewMethod's recipe:
    views - 1 augmented ones beside the teacher's own), or None for one view (the embedding alone)."""
    if views == 1:
        return None
    mean, std = normalisation(teacher.preprocess)
    return ViewSpec(views - 1, teacher.input_size, mean, std, augmix, min_scale)
