"""The method protocol: a method sees the teacher, a task and a shard's decoded samples (with their
teacher embeddings already computed once) and returns one outcome per sample. It owns its reset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image

from harness.models.teacher import Teacher
from tasks.base import SampleRef, Task
from tasks.templates import TemplateSet


@dataclass(frozen=True)
class SampleInput:
    ref: SampleRef
    image: Image.Image
    content_hash: str
    seed: int
    """derive_seed(run seed, task, sample id): the only randomness a method may use for this sample."""
    teacher_embedding: torch.Tensor
    """(D,) projected, unnormalised, on the teacher's device."""
    teacher_seconds: float
    """This sample's share of the batched teacher forward, so every method's cost includes it."""


@dataclass(frozen=True)
class Outcome:
    prediction: int | None
    top5: tuple[int, ...] = ()
    confidence: float | None = None
    """The probability the method gives its prediction (what calibration measures), per method in the
    README's fidelity table: the softmax of its final logits at the teacher's scale for most."""
    msp: float | None = None
    """The maximum-softmax score an OOD detector thresholds: the largest of those probabilities (the
    confidence itself whenever the prediction is their argmax)."""
    mcm: float | None = None
    """The MCM score (Ming et al., NeurIPS 2022): the largest softmax of the final logits divided by the
    teacher's scale, i.e. of cosine-scale scores at temperature 1; None where a method's output is not
    logits (probability sums, label distributions)."""
    prediction_before: int | None = None
    """The teacher's own prediction with the same classifier, before any adaptation."""
    n_templates: int = 0
    template_set: str | None = None
    """The name of the prompts the classifier came from (`single`, `openai-imagenet-80`, `coop:dtd`,
    ...), or how a method that learns its prompt started it."""
    steps: int = 0
    losses: tuple[float, ...] = ()
    seconds: float = 0.0
    flops: int | None = None
    """Counted FLOPs for this sample, the teacher's image forward included."""
    batch: int = 1
    """Samples computed together with this one (the peak memory of a batch covers them all)."""
    error: str | None = None


class Method(Protocol):
    name: str

    def templates(self, task: Task) -> TemplateSet | None:
        """The prompt templates whose text classifier this method scores with (None: it builds its own)."""
        ...

    def flops(self, teacher: Teacher, task: Task) -> int:
        """FLOPs per sample, the teacher's image forward included (counted, not estimated; works on a
        teacher built on the meta device, which is how `apm-bench plan` counts without weights)."""
        ...

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]: ...


@dataclass(frozen=True)
class Scores:
    prediction: list[int]
    top5: list[tuple[int, ...]]
    confidence: list[float]
    mcm: list[float]


def final_scores(logits: torch.Tensor, scale: float, prediction: int | None = None) -> dict[str, float]:
    """confidence, msp and mcm (Outcome's fields) of one row of final logits (C,) at the teacher's
    scale: the softmax's probability of `prediction` (default: the argmax), its maximum, and the maximum
    of the softmax of logits / scale (MCM at temperature 1)."""
    logits = logits.detach().float()
    probs = logits.softmax(-1)
    top = int(probs.argmax()) if prediction is None else prediction
    return {"confidence": float(probs[top]), "msp": float(probs.max()), "mcm": float((logits / scale).softmax(-1).max())}


def score(embeddings: torch.Tensor, classifier: torch.Tensor, logit_scale: float) -> Scores:
    """Cosine similarity to each class embedding; confidence = softmax probability at CLIP's scale (the
    prediction is the argmax, so it is also the MSP), mcm at temperature 1.
    Always fp32, even when called inside autocast: in bf16 or fp16 near-tied classes can swap, and a
    method's "before" prediction would no longer equal the zero-shot row of the same sample."""
    with torch.autocast(embeddings.device.type, enabled=False):
        logits = logit_scale * F.normalize(embeddings.float(), dim=-1) @ classifier.float()
        probs = logits.softmax(dim=-1)
        k = min(5, classifier.shape[1])
        top = logits.topk(k, dim=-1).indices
        conf = probs.gather(1, top[:, :1]).squeeze(1)
        mcm = (logits / logit_scale).softmax(dim=-1).amax(dim=-1)
    return Scores(top[:, 0].tolist(), [tuple(r) for r in top.tolist()], conf.tolist(), mcm.tolist())

