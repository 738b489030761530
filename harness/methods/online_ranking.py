"""What TDA and DMN share beyond the protocol: their class ranking with an explicit tie rule, their
text classifier's prompts, and their FLOPs counted once per (teacher, classes, length).

The ranking sorts the scores with a stable descending sort, so equal scores rank by the lowest class
index, as torch.argmax picks the zero-shot prediction: torch.topk (OnlineBase.outcome's) returns tied
classes in no documented order (on the CPU, [1, 3, 3, 0, 3] gives 2, 4, 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.flops import count_flops
from harness.methods.base import Outcome
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import SINGLE, TemplateSet

TEMPLATE_CHOICES = ("single", "task")


def prompts(choice: str, task: Task) -> TemplateSet:
    """`single`: "a photo of a {}." (TTA-VLM's protocol); `task`: the task's own template set (CLIP's
    80 templates on the ImageNet tasks, CoOp's prompt on the fine-grained ones)."""
    return task.templates if choice == "task" else SINGLE


def ranked(scores: torch.Tensor, probabilities: dict[str, float | None], before: int, templates: TemplateSet) -> Outcome:
    """The outcome of final class scores (C,): top-1 and top-5 by a stable descending sort (ties to the
    lowest class index), with the method's own confidence, msp and mcm (`probabilities`: final_scores
    of logits, or `not_logits` of an output that is not)."""
    order = scores.detach().float().argsort(descending=True, stable=True)[: min(5, scores.shape[-1])].tolist()
    return Outcome(int(order[0]), tuple(order), prediction_before=before, n_templates=len(templates),
                   template_set=templates.name, **probabilities)  # type: ignore[arg-type]


def not_logits(probability: float) -> dict[str, float | None]:
    """The scores of an output that is not logits (a probability sum, a label distribution): its own
    probability of the prediction is both the confidence and the MSP; MCM does not apply."""
    return {"confidence": probability, "msp": probability, "mcm": None}


def first_argmax(scores: torch.Tensor) -> int:
    """The highest score's class; on ties the lowest index (torch.argmax's documented rule)."""
    return int(scores.argmax())


class FlopCache:
    """Per-sample FLOPs counted once per (teacher, class names, stream length): the engine asks before
    every segment, and the count does not depend on the samples."""

    def __init__(self) -> None:
        self._counts: dict[tuple, int] = {}

    def get(self, teacher: Teacher, task: Task, length: int, step: Callable[[], object]) -> int:
        """teacher.image_flops plus the counted FLOPs of `step` (a call on a state at full capacity)."""
        key = (id(teacher), tuple(task.classnames), length)
        if key not in self._counts:
            self._counts[key] = teacher.image_flops + count_flops(step)
        return self._counts[key]
