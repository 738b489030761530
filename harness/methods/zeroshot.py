"""CLIP zero-shot baselines: one template (TPT's CLIP row) and the template ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from harness.device import now
from harness.methods.base import Outcome, SampleInput, score
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import SINGLE, TemplateSet


@dataclass
class PromptMethod:
    """Classify the teacher's own embedding; nothing is adapted, so there is nothing to reset."""

    name: str
    ensemble: bool
    features_only: ClassVar[bool] = True
    """It reads nothing but the teacher's embedding: with a feature cache, its shards are not decoded."""
    flop_teacher: Teacher | None = field(default=None, repr=False)
    """The teacher FLOPs are counted on (the worker's meta-device twin); None: the one it runs with."""

    def templates(self, task: Task) -> TemplateSet:
        return task.templates if self.ensemble else SINGLE

    def flops(self, teacher: Teacher, task: Task) -> int:
        """Per sample: the teacher's image forward and the cosine scores against every class (the
        classifier is D x C whatever its templates, so it is not built to be measured)."""
        return teacher.image_flops + 2 * teacher.embed_dim * len(task.classnames)

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]:
        templates = self.templates(task)
        classifier = teacher.classifier(task.classnames, templates)
        start = now(teacher.device)
        scores = score(torch.stack([s.teacher_embedding for s in samples]), classifier, teacher.logit_scale)
        share = (now(teacher.device) - start) / max(len(samples), 1)
        flops = self.flops(self.flop_teacher or teacher, task)
        return [
            Outcome(
                prediction=scores.prediction[i],
                top5=scores.top5[i],
                confidence=scores.confidence[i],
                msp=scores.confidence[i],
                mcm=scores.mcm[i],
                n_templates=len(templates),
                template_set=templates.name,
                seconds=s.teacher_seconds + share,
                flops=flops,
                batch=len(samples),
            )
            for i, s in enumerate(samples)
        ]


def zeroshot(_: None) -> PromptMethod:
    return PromptMethod("zeroshot", ensemble=False)


def ensemble(_: None) -> PromptMethod:
    return PromptMethod("ensemble", ensemble=True)
